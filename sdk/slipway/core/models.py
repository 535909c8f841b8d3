"""Model zoo (teacher CNN, student CNN for 1D and 2D inputs of any size, MLP) and user factories.

A model is named by a ModelSpec: a zoo name or "package.module:function", called with input_shape and
num_classes. Checkpoints store the spec beside the weights so that any step can rebuild the model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slipway.core.config import ModelSpec
from slipway.core.errors import ModelError

ModelFactory = Callable[..., nn.Module]


def _conv_block(dims: int, cin: int, cout: int) -> list[nn.Module]:
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return [conv(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True)]


def _spatial_dims(input_shape: Sequence[int]) -> int:
    if len(input_shape) not in (2, 3):
        raise ModelError(f"CNNs take (C, L) or (C, H, W) inputs; got input_shape {tuple(input_shape)}")
    return len(input_shape) - 1


def conv_net(
    input_shape: Sequence[int], num_classes: int, widths: Sequence[int], blocks_per_stage: int = 2
) -> nn.Module:
    """VGG-style CNN: stages of conv-BN-ReLU blocks, pooling between stages while the input is large enough."""
    dims = _spatial_dims(input_shape)
    pool = nn.MaxPool2d if dims == 2 else nn.MaxPool1d
    gap = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)
    layers: list[nn.Module] = []
    size, cin = min(input_shape[1:]), input_shape[0]
    for i, width in enumerate(widths):
        for _ in range(blocks_per_stage):
            layers += _conv_block(dims, cin, width)
            cin = width
        if i < len(widths) - 1 and size >= 4:
            layers.append(pool(2))
            size //= 2
    layers += [gap, nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def teacher_cnn(input_shape: Sequence[int], num_classes: int, width: int = 64) -> nn.Module:
    return conv_net(input_shape, num_classes, [width, width * 2, width * 2], blocks_per_stage=2)


def student_cnn(input_shape: Sequence[int], num_classes: int, width: int = 16, stages: int = 2) -> nn.Module:
    """One conv block per stage, widths width, 2*width, 2*width...; a third stage widens the receptive field
    (what 1D signals such as mnist1d need) for little compute, since it runs after two poolings."""
    if stages < 1:
        raise ModelError(f"student_cnn: stages must be >= 1, got {stages}")
    return conv_net(
        input_shape, num_classes, [width * min(2**i, 2) for i in range(stages)], blocks_per_stage=1
    )


def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 128)) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = 1
    for d in input_shape:
        fan_in *= int(d)
    for width in hidden:
        layers += [nn.Linear(fan_in, width), nn.ReLU(inplace=True)]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


ZOO: dict[str, ModelFactory] = {"teacher_cnn": teacher_cnn, "student_cnn": student_cnn, "mlp": mlp}


def resolve_factory(architecture: str) -> ModelFactory:
    if architecture in ZOO:
        return ZOO[architecture]
    module_name, sep, attr = architecture.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(
            f"architecture {architecture!r}: expected one of {sorted(ZOO)} or 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelError(f"architecture {architecture!r}: cannot import {module_name!r}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"architecture {architecture!r}: {module_name} has no callable {attr!r}")
    return factory


def _whole(value: Any) -> Any:
    """Whole floats back to ints, through lists and dicts (what a value without a declared type gets)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_whole(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    return value


def _like(default: Any, value: Any) -> Any:
    """`value` with the type of a parameter's default: 256.0 for `width=64` is 256, 1 for `p=0.5` is 1.0."""
    if isinstance(default, bool) or isinstance(value, bool):
        return value
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    return _whole(value) if isinstance(default, list | tuple | dict) else value


def factory_kwargs(factory: ModelFactory, kwargs: dict[str, Any], architecture: str) -> dict[str, Any]:
    """The spec's kwargs with the types the factory declares.

    Between pipeline steps the config travels as a KFP `dict` parameter, a protobuf Struct where every number
    is a double, so `hidden: 256` arrives as 256.0. The factory's signature is the schema of its kwargs: an
    annotated parameter is validated with pydantic (int, bool, list[int], ...; 256.0 -> 256, 2.5 for an int is
    an error naming the key), an unannotated one takes the type of its default, and with neither a whole float
    becomes an int (the safe side: PyTorch sizes must be ints, and an int works wherever a float does).
    """
    import inspect
    import typing

    from pydantic import TypeAdapter, ValidationError

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return _whole(kwargs)
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # unresolvable forward references: fall back to defaults
        hints = {}
    out: dict[str, Any] = {}
    for name, value in kwargs.items():
        param = params.get(name)
        annotation = hints.get(name, inspect.Parameter.empty)
        if param is not None and annotation is not inspect.Parameter.empty:
            try:
                adapter: TypeAdapter[Any] = TypeAdapter(annotation)
            except Exception:  # a type pydantic cannot validate (a class): keep the value as it came
                adapter = None  # type: ignore[assignment]
            if adapter is not None:
                try:
                    out[name] = adapter.validate_python(value)
                except ValidationError as err:
                    raise ModelError(
                        f"{architecture}: kwargs.{name} must be {getattr(annotation, '__name__', annotation)}, "
                        f"got {value!r} ({err.errors()[0]['msg']})"
                    ) from None
                continue
        if param is not None and param.default is not inspect.Parameter.empty and param.default is not None:
            out[name] = _like(param.default, value)
        else:
            out[name] = _whole(value)
    return out


def build_model(spec: ModelSpec, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Call the factory with input_shape and num_classes (plus the spec's kwargs) and check the result."""
    factory = resolve_factory(spec.architecture)
    kwargs = factory_kwargs(factory, spec.kwargs, spec.architecture)
    try:
        model = factory(input_shape=tuple(input_shape), num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise ModelError(f"architecture {spec.architecture!r} rejected its arguments: {err}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"architecture {spec.architecture!r} returned {type(model).__name__}, not nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(
    model: nn.Module,
    spec: ModelSpec,
    input_shape: Sequence[int],
    num_classes: int,
    path: Path,
    pruning: dict[str, Any] | None = None,
) -> None:
    """Save spec + weights; `pruning` (what structured pruning did) marks weights narrower than the spec."""
    payload: dict[str, Any] = {
        "spec": spec.model_dump(),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "state_dict": model.state_dict(),
    }
    if pruning is not None:
        payload["pruning"] = pruning
    torch.save(payload, path)


def resize_to_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Shrink a freshly built model's layers to the (pruned) tensor shapes of `state_dict`, in place.

    Structured pruning removes channels, so the spec alone no longer describes the shapes; the weights do.
    Only tensors are stored (no pickled modules), so checkpoints stay loadable with weights_only=True.
    """
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        for pname, param in list(module.named_parameters(recurse=False)):
            value = state_dict.get(prefix + pname)
            if value is not None and value.shape != param.shape:
                setattr(
                    module, pname, nn.Parameter(torch.empty_like(value), requires_grad=param.requires_grad)
                )
        for bname, buf in list(module.named_buffers(recurse=False)):
            value = state_dict.get(prefix + bname)
            if buf is not None and value is not None and value.shape != buf.shape:
                module.register_buffer(bname, torch.empty_like(value))
        weight = state_dict.get(prefix + "weight")
        if weight is None:
            continue
        if isinstance(module, nn.modules.conv._ConvNd):
            module.out_channels = int(weight.shape[0])
            module.in_channels = int(weight.shape[1]) * module.groups
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.num_features = int(weight.shape[0])
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = int(weight.shape[0]), int(weight.shape[1])
    return model


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a Slipway checkpoint (weights_only: no pickled code is ever executed)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise ModelError(f"{path}: not a loadable Slipway model checkpoint: {err}") from None
    spec = ModelSpec.model_validate(payload["spec"])
    model = build_model(spec, payload["input_shape"], payload["num_classes"])
    if payload.get("pruning"):
        resize_to_state_dict(model, payload["state_dict"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload
