"""Explanations and model cards served by `slipway serve` (docs/serving.md, "Explanations").

An explain request is an inference request: the served model answers it, and the PyTorch checkpoint packaged
beside the served version (`triton_repository.EXPLAIN_CHECKPOINT`, digest-verified) gives the attributions,
with the same `slipway.evaluation.attribution.attribute` as the offline explain step. The checkpoint is loaded
once per served version and dropped when that version stops serving (the core calls `release_unserved` after
every reload and unload). torch and Captum are imported on the first explain request, never at startup.

Attribution is CPU-heavy and runs in one worker thread, one request at a time, off the event loop; requests
are bounded in rows, steps and waiting requests, so an explain request can never starve inference.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from slipway.core.config import ExplainConfig, ExplainMethod
from slipway.core.errors import (
    InvalidInputError,
    ModelError,
    NotFoundError,
    OverloadedError,
    RequestTimeoutError,
    SlipwayError,
)
from slipway.serving.loader import LoadedModel
from slipway.serving.triton_repository import MODEL_CARD_FILES, explain_checkpoint

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = get_args(ExplainMethod)
DEFAULT_METHOD = "integrated_gradients"
DEFAULT_STEPS: int = ExplainConfig.model_fields["steps"].default
MAX_ROWS = 16  # rows per explain request: Integrated Gradients runs the model rows x steps times
MAX_STEPS = 256
MAX_WAITING = 8  # explain requests admitted at once (one computes, the others wait); more: 503
# Request parameters an explain request may carry (besides these, Triton's own two).
PARAMETERS = ("method", "target", "steps")
REQUEST_PARAMETERS = (*PARAMETERS, "binary_data_output", "timeout")
ATTRIBUTIONS = "attributions"  # output tensors added to the served model's own
TARGET = "target"
CARD_TYPES = {"markdown": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8"}


@dataclass(frozen=True)
class ExplainParameters:
    """What to explain: `target` is None (the prediction), or one class id per row."""

    method: str
    steps: int
    target: np.ndarray | None

    def response_parameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.method == "integrated_gradients":
            out["steps"] = self.steps
        return out


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_parameters(params: Mapping[str, Any], rows: int) -> ExplainParameters:
    """The request's `parameters`: method, target (an int for all rows or one per row), steps; 400 naming the
    field otherwise."""
    unknown = sorted(set(params) - set(REQUEST_PARAMETERS))
    if unknown:
        raise InvalidInputError(
            f"parameters: unrecognized {unknown} for an explain request (expected {', '.join(PARAMETERS)})"
        )
    method = params.get("method", DEFAULT_METHOD)
    if method not in METHODS:
        raise InvalidInputError(
            f"parameters.method: expected one of {', '.join(METHODS)}; got {method!r:.80}"
        )
    steps = params.get("steps", DEFAULT_STEPS)
    if not _whole(steps) or not 2 <= steps <= MAX_STEPS:
        raise InvalidInputError(f"parameters.steps: expected an integer in 2..{MAX_STEPS}; got {steps!r:.80}")
    target = params.get("target")
    ids: np.ndarray | None = None
    if target is not None:
        values = [target] * rows if _whole(target) else target
        if not isinstance(values, list) or not all(_whole(v) and v >= 0 for v in values):
            raise InvalidInputError(
                f"parameters.target: expected a class id (a non-negative integer) or a list of {rows}, one "
                f"per row; got {target!r:.80}"
            )
        if len(values) != rows:
            raise InvalidInputError(
                f"parameters.target: expected {rows} class ids, one per row; got {len(values)}"
            )
        ids = np.asarray(values, dtype=np.int64)
    return ExplainParameters(method, steps, ids)


def explained_input(model: LoadedModel, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The one FP32 input to explain, batch first, finite, within MAX_ROWS; 400 naming what is wrong."""
    if len(model.inputs) != 1:
        raise InvalidInputError(
            f"model {model.name!r} has {len(model.inputs)} inputs; explanations need a model with one FP32 input"
        )
    clash = sorted({ATTRIBUTIONS, TARGET} & set(model.outputs))
    if clash:
        raise InvalidInputError(
            f"model {model.name!r} has output(s) named {clash}, which explain responses add; rename them to explain it"
        )
    (name,) = model.inputs
    x = arrays[name]
    where = f"model {model.name!r} input {name!r}"
    if x.dtype != np.float32:
        raise InvalidInputError(
            f"{where}: explanations need FP32 inputs; the model takes {model.inputs[name].datatype}"
        )
    if x.ndim not in (2, 3, 4):
        raise InvalidInputError(
            f"{where}: explanations need a shape (N, F), (N, C, L) or (N, C, H, W); got {list(x.shape)}"
        )
    if len(x) > MAX_ROWS:
        raise InvalidInputError(
            f"{where}: an explain request takes at most {MAX_ROWS} rows, got {len(x)}; send several requests"
        )
    if not np.isfinite(x).all():
        raise InvalidInputError(f"{where}: explanations need finite values (NaN or Inf found)")
    return x


def default_target(prediction: Mapping[str, np.ndarray], rows: int) -> np.ndarray | None:
    """The served model's predicted class per row, from its first (N, classes) output; None when it has none."""
    for output in prediction.values():
        if output.ndim == 2 and output.shape[0] == rows and np.issubdtype(output.dtype, np.floating):
            return np.asarray(output.argmax(axis=1), dtype=np.int64)
    return None


@dataclass
class _Checkpoint:
    """A served version's PyTorch model; `served` is kept so that the entry dies with that exact version."""

    served: LoadedModel
    module: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int


class Explainer:
    """The checkpoint cache and the worker thread of one server. `is_served(model)` says whether a loaded
    version still serves (the core answers), so that a version reloaded or unloaded is never kept."""

    def __init__(self, is_served: Callable[[LoadedModel], bool]) -> None:
        self._is_served = is_served
        self._cache: dict[int, _Checkpoint] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._admitted = 0

    def release_unserved(self) -> None:
        """Drop the checkpoints of versions no longer served (after a reload, an unload or an experiment)."""
        with self._lock:
            gone = [key for key, entry in self._cache.items() if not self._is_served(entry.served)]
            for key in gone:
                entry = self._cache.pop(key)
                log.info(
                    "explain checkpoint released model=%s version=%s", entry.served.name, entry.served.version
                )

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _checkpoint(self, model: LoadedModel, version_dir: Path) -> _Checkpoint:
        """The cached checkpoint of this served version, or verify and load it (worker thread)."""
        with self._lock:
            entry = self._cache.get(id(model))
        if entry is not None and entry.served is model:
            return entry
        from slipway.core.models import load_model  # torch: imported on the first explain request only

        path = explain_checkpoint(
            version_dir
        )  # NotFoundError, or ArtifactIntegrityError on a digest mismatch
        module, payload = load_model(path)
        entry = _Checkpoint(
            model, module, tuple(int(d) for d in payload["input_shape"]), int(payload["num_classes"])
        )
        log.info("explain checkpoint loaded model=%s version=%s path=%s", model.name, model.version, path)
        with self._lock:
            if self._is_served(model):  # a version swapped out meanwhile is not cached
                self._cache[id(model)] = entry
        return entry

    def _attribute(
        self,
        model: LoadedModel,
        version_dir: Path,
        x: np.ndarray,
        params: ExplainParameters,
        target: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Worker thread: load the checkpoint, check the request against it, attribute."""
        import torch

        from slipway.evaluation.attribution import attribute

        entry = self._checkpoint(model, version_dir)
        if tuple(x.shape[1:]) != entry.input_shape:
            raise InvalidInputError(
                f"model {model.name!r} version {model.version}: the request's rows have shape {list(x.shape[1:])} "
                f"but the packaged checkpoint takes {list(entry.input_shape)}"
            )
        if target is None:
            with torch.no_grad():
                target = entry.module(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)
        if target.max(initial=0) >= entry.num_classes:
            raise InvalidInputError(
                f"parameters.target: class ids must lie in 0..{entry.num_classes - 1}; got {target.tolist()}"
            )
        try:
            attributions = attribute(entry.module, x, params.method, target, steps=params.steps)
        except SlipwayError:
            raise
        except Exception as err:  # a checkpoint Captum cannot differentiate: the caller learns why, no 500
            log.exception("attribution failed model=%s version=%s", model.name, model.version)
            raise ModelError(
                f"model {model.name!r} version {model.version}: attribution failed: {err}"
            ) from None
        return attributions, target

    async def explain(
        self,
        model: LoadedModel,
        version_dir: Path,
        x: np.ndarray,
        params: ExplainParameters,
        target: np.ndarray | None,
        timeout_s: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Attributions shaped like `x` (FP32) and the class ids they explain; bounded in waiting requests
        and time (503 beyond either)."""
        if self._admitted >= MAX_WAITING:
            raise OverloadedError(f"{MAX_WAITING} explain requests are already waiting; retry later")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="explain")
        self._admitted += 1
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._attribute, model, version_dir, x, params, target)
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            raise RequestTimeoutError(
                f"explain request for model {model.name!r} took longer than {timeout_s:g} s; send fewer rows or steps"
            ) from None

    def _done(self, future: asyncio.Future[Any]) -> None:
        """Free the slot when the work ends (not when a waiter gives up); its error was answered or is moot."""
        self._admitted -= 1
        if not future.cancelled():
            future.exception()


def read_card(version_dir: Path, accept: str | None, where: str) -> tuple[bytes, str]:
    """A version's model card as (bytes, content type): HTML when `accept` prefers text/html, else Markdown;
    whichever exists when only one does; NotFoundError when it has none."""
    order = ["html", "markdown"] if prefers_html(accept) else ["markdown", "html"]
    for kind in order:
        path = version_dir / MODEL_CARD_FILES[kind]
        if path.is_file():
            return path.read_bytes(), CARD_TYPES[kind]
    raise NotFoundError(
        f"{where} has no model card ({' or '.join(MODEL_CARD_FILES.values())} in its version folder): "
        "cards are written when a registered version is packaged"
    )


def prefers_html(accept: str | None) -> bool:
    """True when the Accept header ranks text/html above Markdown (q-values honoured; */* ties go to Markdown)."""
    if not accept:
        return False
    best = {"html": 0.0, "markdown": 0.0}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                q = q if math.isfinite(q) else 0.0
        media = media.lower()
        if media == "text/html":
            best["html"] = max(best["html"], q)
        elif media in ("text/markdown", "text/plain", "text/*", "*/*"):
            best["markdown"] = max(best["markdown"], q)
    return best["html"] > best["markdown"]
