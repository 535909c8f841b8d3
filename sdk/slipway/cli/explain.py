"""`slipway explain`: attributions of one model (a checkpoint, or a registry version or alias) for the rows of an
NPZ file, with the sanity check, written to a folder (docs/explanations.md).

Registered by the integrator in `main.LAZY_COMMANDS` as ("slipway.cli.explain", "explain", ...). Heavy imports
(torch, Captum, MLflow) happen inside the command.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, get_args

import click

from slipway.cli.errors import fail
from slipway.core.config import ExplainMethod
from slipway.core.errors import ConfigError, SlipwayError

METHODS = get_args(ExplainMethod)
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _load_input(path: Path, input_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """x (float32, batch first; a single row gets its batch axis) and the optional y of an NPZ file."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # numpy raises several types for a file that is not an NPZ
        raise ConfigError(f"--input {path}: not a readable NPZ file ({err})") from None
    if "x" not in arrays:
        raise ConfigError(
            f"--input {path}: expected an array named `x` (and optionally `y`); it has {sorted(arrays)}"
        )
    x = arrays["x"]
    if not np.issubdtype(x.dtype, np.number):
        raise ConfigError(f"--input {path}: `x` must be numeric; got dtype {x.dtype}")
    if tuple(x.shape) == input_shape:
        x = x[None]
    if tuple(x.shape[1:]) != input_shape or len(x) == 0:
        want = ", ".join(str(d) for d in input_shape)
        raise ConfigError(
            f"--input {path}: `x` has shape {tuple(x.shape)}; the model takes (N, {want}) (or one row ({want}))"
        )
    y = arrays.get("y")
    if y is not None and (y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer)):
        raise ConfigError(
            f"--input {path}: `y` must hold one integer class id per row of x ({len(x)}); got {y.dtype} {y.shape}"
        )
    return x.astype(np.float32), y


def _checkpoint(model: str, cfg: Any, workdir: Path) -> tuple[Path, dict[str, str]]:
    """The checkpoint file for --model and where it came from: a file, or a registry version or alias
    (downloaded, its sha256 checked against the registry's)."""
    from slipway import registry
    from slipway.core.artifacts import sha256_file

    path = Path(model)
    if path.is_file():
        return path, {"path": str(path.resolve()), "sha256": sha256_file(path)}
    looks_like_path = "/" in model or os.sep in model or path.suffix in (".pt", ".pth")
    if looks_like_path or not (model.isdigit() or _ALIAS.match(model)):
        raise ConfigError(f"--model {model}: no such checkpoint file (or give a registry version or alias)")
    if not (cfg.registry.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise ConfigError(
            f"--model {model}: a registry version or alias needs --tracking-uri (or registry.tracking_uri, "
            "$MLFLOW_TRACKING_URI)"
        )
    version, alias = (model, None) if model.isdigit() else (None, model)
    downloaded, found = registry.download_checkpoint(
        cfg.registry, cfg.registry.model_name, workdir, version=version, alias=alias
    )
    source = {
        "registry": found.tracking_uri,
        "name": found.model_name,
        "version": found.version,
        "run_id": found.run_id,
        "sha256": sha256_file(downloaded),
    }
    return downloaded, source


@click.command("explain")
@click.option(
    "--model",
    "model_ref",
    required=True,
    metavar="VERSION|ALIAS|CHECKPOINT",
    help="a registered version number or alias of --model-name, or a Slipway checkpoint (.pt) file",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="NPZ file with `x` (rows shaped like the model's input) and optionally `y` (labels)",
)
@click.option(
    "-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="folder to write"
)
@click.option(
    "--method",
    "methods",
    type=click.Choice(METHODS),
    multiple=True,
    help="attribution method, repeatable [default: explain.methods of the config]",
)
@click.option(
    "--target-class",
    type=click.IntRange(0),
    default=None,
    help="explain this class for every row [default: each row's predicted class]",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML config file or preset name: its explain and registry sections (default: quickstart)",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override one config value")
@click.option("--tracking-uri", default=None, help="MLflow registry [default: registry.tracking_uri]")
@click.option("--model-name", default=None, help="registered model name [default: registry.model_name]")
def explain(
    model_ref: str,
    input_path: Path,
    output: Path,
    methods: tuple[str, ...],
    target_class: int | None,
    config_file: str | None,
    overrides: tuple[str, ...],
    tracking_uri: str | None,
    model_name: str | None,
) -> None:
    """Explain a model's predictions for the rows of an NPZ file with Captum, with the sanity check."""
    from slipway.core.config import load_config

    try:
        cfg = load_config(config_file, list(overrides))
        if tracking_uri is not None:
            cfg.registry.tracking_uri = tracking_uri
        if model_name is not None:
            cfg.registry.model_name = model_name
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint, source = _checkpoint(
                model_ref, cfg, Path(tmp)
            )  # before torch: a bad --model fails fast
            from slipway.core.models import load_model
            from slipway.evaluation.explain import explain_rows

            model, payload = load_model(checkpoint)
            x, y = _load_input(input_path, tuple(int(d) for d in payload["input_shape"]))
            classes = int(payload["num_classes"])
            if target_class is not None and target_class >= classes:
                raise ConfigError(f"--target-class {target_class}: the model has classes 0..{classes - 1}")
            result = explain_rows(
                model,
                x,
                list(methods) or list(cfg.explain.methods),
                output,
                y=y,
                target_class=target_class,
                steps=cfg.explain.steps,
                sanity_max_correlation=cfg.explain.sanity_max_correlation,
                seed=cfg.seed,
                source=source,
            )
    except SlipwayError as err:
        fail(err)
    sanity = result.sanity
    verdict = "passed" if sanity.passed else "FAILED"
    click.echo(
        f"explained {result.rows} rows with {', '.join(result.methods)}; sanity check {verdict} (highest rank "
        f"correlation with a weight-randomized model {sanity.rank_correlation:.3f}, {sanity.method}; threshold "
        f"{sanity.threshold:.2f}); wrote {output}/explanation.json, attributions.npz, attributions.png"
    )
