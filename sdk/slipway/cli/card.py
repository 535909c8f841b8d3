"""`slipway card MODEL VERSION`: print the model card registered with a version (docs/model-card.md)."""

from __future__ import annotations

import click

from slipway.cli.errors import CommandError, ExitCode
from slipway.core.errors import NotFoundError

FORMATS = {"md": "markdown", "html": "html", "json": "json"}


@click.command("card")
@click.argument("model")
@click.argument("version")
@click.option(
    "-o",
    "--output",
    "output_format",
    type=click.Choice(list(FORMATS)),
    default="md",
    show_default=True,
    help="Markdown, the HTML page, or the card's numbers as JSON",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI of the registry (default: $MLFLOW_TRACKING_URI)",
)
def card(model: str, version: str, output_format: str, tracking_uri: str | None) -> None:
    """Print the model card of MODEL at VERSION (a number, or an alias such as champion).

    The card is downloaded from the registry and checked against the sha256 recorded with the version.
    """
    import os
    import tempfile
    from pathlib import Path

    from slipway import registry
    from slipway.core.config import RegistryConfig
    from slipway.core.errors import ConfigError
    from slipway.evaluation.model_card import CARD_FILES

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise CommandError(ConfigError("no registry: give --tracking-uri or set $MLFLOW_TRACKING_URI"))
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty store there and report the version missing
        raise CommandError(
            ConfigError(f"--tracking-uri {uri}: no MLflow store at {uri.removeprefix('sqlite:///')}")
        )
    os.environ.setdefault(
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
    )  # stdout is the card, stderr stays quiet
    store = RegistryConfig(tracking_uri=tracking_uri, model_name=model)
    try:
        resolved = version if version.isdigit() else registry.version_by_alias(store, version)
        with tempfile.TemporaryDirectory(prefix="slipway-card-") as tmp:
            folder = registry.download_model_card(store, resolved, tmp)
            text = (folder / CARD_FILES[FORMATS[output_format]]).read_text(encoding="utf-8")
    except NotFoundError as err:  # an unknown model, version or alias, or a version without a card
        raise CommandError(err, exit_code=ExitCode.USAGE) from None
    click.echo(text, nl=not text.endswith("\n"))
