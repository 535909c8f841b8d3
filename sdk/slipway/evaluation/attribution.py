"""Attributions with Captum for any input Slipway trains on: images (N, C, H, W), signals (N, C, L), tabular (N, F).

One entry point, `attribute`, shared by the explain step, `slipway explain` and the local server's explain path,
so that all three compute the same numbers. Methods: Integrated Gradients and saliency (gradients), occlusion
(perturbation: no gradients, a check that does not trust them).
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch
from torch import nn

from slipway.core.config import ExplainMethod
from slipway.core.errors import ConfigError

Method = ExplainMethod
METHODS: tuple[str, ...] = get_args(Method)
CHUNK = 64  # rows per Captum call: IG multiplies the batch by its step count
# Input elements per forward pass that IG's steps and occlusion's windows are batched up to: small inputs
# (digits: 64 values, 512 rows a pass) run ~30% faster on CPU than in passes of CHUNK rows; larger inputs keep
# CHUNK rows a pass, so the memory a pass takes (activations scale with it) stays bounded.
BATCH_ELEMENTS = 2**15


def check_method(method: str) -> Method:
    if method not in METHODS:
        raise ConfigError(f"method: expected one of {', '.join(METHODS)}; got {method!r}")
    return method  # type: ignore[return-value]


def occlusion_window(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A window about an eighth of each spatial side (at least 1), over all channels; a single feature for tabular."""
    if len(shape) == 1:
        return (1,)
    return (shape[0], *(max(1, side // 8) for side in shape[1:]))


def attribute(
    model: nn.Module,
    x: np.ndarray,
    method: str = "integrated_gradients",
    target: np.ndarray | None = None,
    *,
    steps: int = 32,
) -> np.ndarray:
    """Attributions for `x` (float32, batch first) towards `target` (class ids; default: the model's prediction).

    Returns an array shaped like `x`. The baseline is all zeros (the inputs are scaled to start at zero).
    """
    from captum.attr import IntegratedGradients, Occlusion, Saliency

    method = check_method(method)
    if x.ndim not in (2, 3, 4):
        raise ConfigError(f"input: expected shape (N, F), (N, C, L) or (N, C, H, W); got {x.shape}")
    model = model.eval()
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if target is None:
        with torch.no_grad():
            target = model(inputs).argmax(1).numpy()
    if len(target) != len(x):
        raise ConfigError(f"target: expected {len(x)} class ids, one per row; got {len(target)}")
    labels = torch.from_numpy(np.asarray(target, dtype=np.int64))
    features = int(np.prod(x.shape[1:]))
    out = []
    for start in range(0, len(x), CHUNK):
        rows, t = inputs[start : start + CHUNK].clone(), labels[start : start + CHUNK]
        if method == "integrated_gradients":
            batch = max(CHUNK, min(len(rows) * steps, BATCH_ELEMENTS // features))
            a = IntegratedGradients(model).attribute(rows, target=t, n_steps=steps, internal_batch_size=batch)
        elif method == "saliency":
            a = Saliency(model).attribute(rows.requires_grad_(), target=t, abs=False)
        else:
            window = occlusion_window(tuple(x.shape[1:]))
            per_eval = max(1, min(8, BATCH_ELEMENTS // (len(rows) * features)))
            a = Occlusion(model).attribute(
                rows, target=t, sliding_window_shapes=window, strides=window, perturbations_per_eval=per_eval
            )
        out.append(a.detach().numpy())
    return np.concatenate(out).astype(np.float32)
