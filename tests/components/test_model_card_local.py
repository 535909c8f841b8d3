"""The model card across real boundaries: register and package run under kfp.local (each a subprocess) on the
files of a real run (tests/released_run.py), with a real MLflow SQLite store; the card is logged with the version,
lands in the Triton version folder beside the digest-checked checkpoint, and `slipway card` prints it in a
subprocess (exit 2, with a clear message, for an unknown version or one registered before cards existed).

No `from __future__ import annotations` here: KFP reads the pipeline's annotations as types."""

import subprocess
import sys
from pathlib import Path
from typing import Any

from kfp import dsl, local
from released_run import released_run

from slipway import registry
from slipway.components.package import package_triton
from slipway.components.register import register
from slipway.core.config import to_parameter
from slipway.core.data import load_splits
from slipway.evaluation.model_card import CARD_FILES
from slipway.serving.triton_repository import MODEL_CARD_FILES, explain_checkpoint


def slipway_card(*args: str) -> subprocess.CompletedProcess[str]:
    """The command as the integrator registers it (cli/main.py's LAZY_COMMANDS), in its own process."""
    return subprocess.run(
        [sys.executable, "-c", "from slipway.cli.card import card; card()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_register_and_package_under_kfp_local_ship_the_card_and_slipway_card_prints_it(
    tmp_path: Path,
) -> None:
    run = released_run(tmp_path / "run")

    @dsl.pipeline(name="register-and-package")
    def register_and_package(config: dict, run_id: str):
        def imported(path: Path, kind: type) -> Any:
            return dsl.importer(artifact_uri=str(path), artifact_class=kind, reimport=False).output

        checkpoint, chosen = imported(run.checkpoint, dsl.Model), imported(run.chosen, dsl.Model)
        registered = register(
            config=config,
            run_id=run_id,
            student_onnx=chosen,
            served_model=chosen,  # an ONNX choice is served as registered
            checkpoint=checkpoint,
            teacher=imported(run.teacher, dsl.Model),
            dataset=imported(run.dataset, dsl.Dataset),
            report=imported(run.report, dsl.Artifact),
            selection_report=imported(run.selection, dsl.Artifact),
            explanation=imported(run.explanation, dsl.Artifact),
            decision=imported(run.decision, dsl.Artifact),
        )
        package_triton(
            config=config,
            run_id=run_id,
            version=registered.outputs["Output"],
            student_onnx=chosen,
            served_model=chosen,  # an ONNX choice is served as registered
            checkpoint=checkpoint,
            model_card=registered.outputs["model_card"],
            reference=imported(run.reference, dsl.Dataset),
        )

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    register_and_package(config=to_parameter(run.cfg, exclude={"cluster"}), run_id=run.run_id)

    store = run.cfg.registry
    uri, model = store.tracking_uri, store.model_name
    assert uri is not None
    client = registry.mlflow_client(store)
    tags = client.get_model_version(model, "1").tags
    # logged with the version: the run's model_card/ folder, the version tags pointing at it and its digest
    logged = {Path(f.path).name for f in client.list_artifacts(run.run_id, registry.MODEL_CARD_ARTIFACT)}
    assert logged == set(CARD_FILES.values())
    assert tags[registry.MODEL_CARD_TAG].endswith(f"/{run.run_id}/artifacts/{registry.MODEL_CARD_ARTIFACT}")
    card_dir = registry.download_model_card(store, "1", tmp_path / "registered")  # digest-verified
    markdown = (card_dir / CARD_FILES["markdown"]).read_text()
    assert f"| MLflow run | {run.run_id} |" in markdown and "| version | 1 |" in markdown
    assert load_splits(run.dataset).fingerprint in markdown

    # in the Triton version folder, beside the model: the card's files and the verified checkpoint
    (repo,) = (tmp_path / "root").rglob("model_repository")
    version_dir = repo / model / "1"
    for name in MODEL_CARD_FILES.values():
        assert (version_dir / name).read_bytes() == (card_dir / name).read_bytes()
    assert explain_checkpoint(version_dir).read_bytes() == run.checkpoint.read_bytes()
    # ... and so in the repository logged with the version (its own digest covers them)
    packaged = registry.download_model_repository(store, "1", tmp_path / "packaged")
    assert (packaged / model / "1" / MODEL_CARD_FILES["markdown"]).read_text() == markdown

    printed = slipway_card(model, "1", "--tracking-uri", uri)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == markdown
    by_alias = slipway_card(model, "challenger", "-o", "html", "--tracking-uri", uri)
    assert by_alias.returncode == 0 and by_alias.stdout == (card_dir / CARD_FILES["html"]).read_text()

    unknown = slipway_card(model, "9", "--tracking-uri", uri)
    assert unknown.returncode == 2 and "version 9 not found" in unknown.stderr, unknown.stderr
    # a version registered the way Slipway did before cards existed: no card tags
    splits = load_splits(run.dataset)
    registry.register_onnx(store, run.run_id, run.chosen, {"slipway.accuracy": "0.5"}, splits.x_test[:2])
    old = slipway_card(model, "2", "--tracking-uri", uri)
    assert old.returncode == 2 and "v2 has no model card" in old.stderr and old.stdout == "", old.stderr
