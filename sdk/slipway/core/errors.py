"""One exception root, so the CLI and the servers can turn every deliberate failure into a clear message.

Every Slipway exception class lives here (KServe `errors.py` style): its `http_status` says how both servers
(`slipway serve`, `slipway monitor serve`) answer it, so the mapping is read in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Location = tuple[str | int, ...]


class SlipwayError(Exception):
    """A failure Slipway explains to the user: the message says what was wrong and what to do.

    `http_status` says how a server reports it (4xx for the caller's mistakes; 503 when it sheds load or cannot
    store, 500 only for a model that fails on valid input); the CLI prints the message without a traceback and
    exits with `exit_code`.
    """

    http_status: int = 400
    exit_code: int = 1


class ConfigError(SlipwayError):
    """A configuration key or value is wrong; the message names the key and what was expected."""

    exit_code = 2


class DataError(SlipwayError):
    """A dataset is missing, malformed, or of an unsupported shape."""


class ModelError(SlipwayError):
    """A model factory cannot be found, imported or called."""


class TrainingError(SlipwayError):
    """Training cannot go on (for example the loss became NaN)."""


class ExportError(SlipwayError):
    """A model could not be exported, or the export disagrees with its source (parity check)."""


class ArtifactIntegrityError(SlipwayError):
    """An artifact's bytes do not match the sha256 recorded in its metadata: it is refused."""

    http_status = 409


class RegistryError(SlipwayError):
    """The MLflow registry refused an operation or holds something unexpected."""


class TritonConfigError(SlipwayError):
    """A Triton model configuration is invalid or does not match its model."""


class NotFoundError(SlipwayError):
    """A named thing (model, tensor, run, report) does not exist."""

    http_status = 404


class OverloadedError(SlipwayError):
    """The server sheds load: its queue is full. Retry later."""

    http_status = 503


class RequestTimeoutError(OverloadedError):
    """A request waited longer than its timeout; like a full queue, the client should back off and retry."""


class UnavailableError(SlipwayError):
    """An API the server's mode does not offer (model load/unload outside explicit model control): Triton's
    UNAVAILABLE, so HTTP 503 and gRPC UNAVAILABLE as Triton answers it; retrying will not help."""

    http_status = 503


class PayloadTooLargeError(SlipwayError):
    """A request body exceeds the server's `--max-body-bytes`; it is refused before being buffered."""

    http_status = 413


class InvalidInputError(SlipwayError):
    """A request that can never succeed as sent: unknown model or tensor, wrong shape, dtype, size or values."""

    http_status = 400


class ModelExecutionError(SlipwayError):
    """ONNX Runtime failed on inputs that passed validation: a server-side fault, reported as 500."""

    http_status = 500


class InferenceClientError(SlipwayError):
    """The server refused or failed a call; the message carries its status and reason."""


class EventError(DataError):
    """A payload-logger event, v2 batch or feedback is malformed; the message names the field."""


class UnsupportedMediaTypeError(SlipwayError):
    """The content type is not JSON / CloudEvents JSON."""

    http_status = 415


class StoreError(SlipwayError):
    """The store cannot write or open its files (disk full, permissions, another writer holds the lock)."""

    http_status = 503


class DriftError(SlipwayError):
    """Evidently could not compute the report (for example a column with no usable values)."""


class ClusterError(SlipwayError):
    """A Kubernetes or Kubeflow API call failed or timed out."""


class KubeconfigError(ClusterError):
    """No usable Kubernetes credentials: the kubeconfig is missing or malformed, or the context is unknown.

    A configuration error (exit 2), not a failed call: nothing was sent, and rerunning will not help.
    """

    exit_code = 2


# --- pydantic validation errors as messages ------------------------------------------------------------------


def _dotted(loc: Location) -> str:
    return ".".join(str(part) for part in loc) or "(root)"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_problems(
    err: Any,
    *,
    name: Callable[[Location], str] = _dotted,
    unknown_hint: Callable[[Location], str] | None = None,
) -> list[str]:
    """One line per problem of a pydantic ValidationError: the key (as `name` spells it), what is wrong and
    what was given; never pydantic's own dump with its type codes and URLs. `unknown_hint` adds to an
    unknown key's line (a "did you mean")."""
    lines = []
    for problem in err.errors(include_url=False):
        loc = tuple(problem["loc"])
        key = name(loc)
        kind = problem["type"]
        if kind == "extra_forbidden":
            lines.append(f"{key}: unknown key" + (unknown_hint(loc) if unknown_hint else ""))
        elif kind == "missing":
            lines.append(f"{key}: required, not given")
        else:
            message = str(problem["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            given = problem.get("input")
            # A section-level check (a model validator) gets the whole section as input: the message says it.
            section_check = isinstance(given, dict | list) and kind == "value_error"
            lines.append(f"{key}: {message}" + ("" if section_check else f" (got {_short(given)})"))
    return lines


def problems_message(heading: str, problems: Sequence[str]) -> str:
    """`heading: problem` for one problem; the heading then one indented line per problem for several."""
    if len(problems) == 1:
        return f"{heading}: {problems[0]}"
    return f"{heading} ({len(problems)} problems):\n" + "\n".join(f"  {p}" for p in problems)
