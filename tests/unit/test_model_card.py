"""The model card holds the numbers of the run that produced it: the real steps write their files on tiny models
with group labels (tests/released_run.py), register builds the card into a real MLflow (SQLite) registry, and
every field is compared with the file it came from; the Markdown and HTML pages show the same numbers, and the
HTML escapes what the user wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from released_run import RunFiles, released_run

from slipway import registry, steps
from slipway.compression.selection import Selection
from slipway.core import data as data_lib
from slipway.core.artifacts import sha256_file
from slipway.core.errors import ArtifactIntegrityError, NotFoundError, RegistryError
from slipway.core.models import load_model
from slipway.evaluation.gate import GateDecision
from slipway.evaluation.model_card import (
    CARD_FILES,
    NOT_COMPUTED,
    ModelCard,
    build_card,
    read_explanation,
    to_html,
    to_markdown,
)
from slipway.serving.triton_repository import MODEL_CARD_FILES
from slipway.steps.common import EvaluationReport


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFiles, registry.RegisteredVersion, Path]:
    out = tmp_path_factory.mktemp("card-run")
    run = released_run(out)
    version = steps.register_candidate(
        run.cfg,
        run.run_id,
        run.chosen,
        run.checkpoint,
        run.dataset,
        run.report,
        run.decision,
        selection_path=run.selection,
        explanation_dir=run.explanation,
        teacher_path=run.teacher,
        card_dir=out / "card",
    )
    return run, version, out / "card"


def card_of(folder: Path) -> ModelCard:
    return ModelCard.model_validate_json((folder / CARD_FILES["json"]).read_text())


def test_the_card_holds_the_runs_numbers_field_by_field(registered) -> None:
    run, version, folder = registered
    card = card_of(folder)
    report = EvaluationReport.model_validate_json(run.report.read_text())
    selection = Selection.model_validate_json(run.selection.read_text())
    decision = GateDecision.model_validate_json(run.decision.read_text())
    explanation = json.loads((run.explanation / "explanation.json").read_text())
    splits = data_lib.load_splits(run.dataset)
    tags = (
        registry.mlflow_client(run.cfg.registry).get_model_version(version.model_name, version.version).tags
    )

    d = card.details
    assert (d.name, d.version, d.aliases, d.mlflow_run_id) == (
        "slipway-fairness",
        "1",
        ["challenger"],
        run.run_id,
    )
    assert d.served_sha256 == sha256_file(run.chosen) == tags["slipway.sha256"]
    assert d.checkpoint_sha256 == sha256_file(run.checkpoint) == tags["slipway.checkpoint_sha256"]
    assert d.owners == ["ml-team <ml@example.com>"] and d.served_file == "model.onnx"
    assert card.use.intended_use == "Sorting <b>digits</b> & co | for tests"
    assert card.use.limitations == run.cfg.card.limitations

    assert card.data.fingerprint == splits.fingerprint == report.dataset_fingerprint
    assert card.data.split_sizes == {
        "train": len(splits.y_train),
        "val": len(splits.y_val),
        "test": len(splits.y_test),
    }
    assert card.data.num_classes == 10 and card.data.input_shape == [1, 8, 8]
    style = splits.groups_of("test")["style"]
    assert card.data.sensitive_features == {
        "style": {g: int((style == g).sum()) for g in ("rotated", "upright")}
    }

    assert card.metrics.teacher == report.teacher and card.metrics.student == report.student
    assert card.metrics.accuracy_change_points == pytest.approx(
        (report.student.accuracy - report.teacher.accuracy) * 100
    )
    assert card.slices == report.fairness is not None

    c = card.compression
    assert c is not None and c.chosen == selection.chosen == report.student.format
    assert c.candidates == selection.candidates and c.reasons == selection.reasons
    assert (c.budget_points, c.reference_accuracy, c.floor) == (
        selection.budget_points,
        selection.reference_accuracy,
        selection.floor,
    )
    assert c.params_ratio == report.teacher.params / report.student.params
    assert c.size_ratio == report.teacher.size_bytes / report.student.size_bytes
    assert c.throughput_ratio == report.student.throughput_ips_b64 / report.teacher.throughput_ips_b64
    assert (
        c.teacher_architecture == "teacher_cnn(width=16)" and c.student_architecture == "student_cnn(width=8)"
    )
    pruning = load_model(run.checkpoint)[1].get("pruning")
    if selection.chosen == "onnx-fp32":  # the unpruned source won: nothing pruned is served
        assert c.pruning is None and pruning is None
    else:
        assert c.pruning is not None and c.pruning.model_dump() == {
            k: pruning[k] for k in c.pruning.model_dump()
        }

    e = card.explanation
    assert e.enabled is explanation["enabled"] is True
    assert e.methods == explanation["methods"] and e.samples == explanation["samples"] == 8
    assert e.mean_rank_correlation == explanation["mean_rank_correlation"]
    assert e.rank_correlation_by_class == explanation["rank_correlation_by_class"]
    assert {m: s.model_dump() for m, s in e.sanity.items()} == {
        m: {k: s[k] for k in ("passed", "rank_correlation", "threshold")}
        for m, s in explanation["sanity"].items()
    }
    assert e.cost_ms_per_image == explanation["cost_ms_per_image"] and e.figures == explanation["figures"]

    assert card.gate == decision
    s = card.serving
    assert (s.format, s.latency_ms_p99_b1, s.throughput_ips_b64) == (
        report.student.format,
        report.student.latency_ms_p99_b1,
        report.student.throughput_ips_b64,
    )
    assert s.max_batch_size == run.cfg.triton.max_batch_size


def test_markdown_and_html_show_the_same_numbers_and_html_escapes_user_text(registered) -> None:
    folder = registered[2]
    card = card_of(folder)
    markdown = (folder / CARD_FILES["markdown"]).read_text()
    page = (folder / CARD_FILES["html"]).read_text()
    assert markdown == to_markdown(card) and page == to_html(card)  # the files are the card's renderings
    m, e = card.metrics, card.explanation
    numbers = [
        card.details.served_sha256,
        card.details.checkpoint_sha256,
        card.data.fingerprint,
        card.details.mlflow_run_id,
        f"{m.teacher.accuracy:.4f}",
        f"{m.student.accuracy:.4f}",
        f"{m.student.macro_f1:.4f}",
        f"{m.student.latency_ms_p99_b1:.3f} ms",
        f"{m.student.throughput_ips_b64:,.0f}/s",
        f"{card.compression.params_ratio:.2f}x",  # type: ignore[union-attr]
        f"{card.compression.throughput_ratio:.2f}x",  # type: ignore[union-attr]
        f"{e.mean_rank_correlation:.3f}",
        f"{e.sanity['student'].rank_correlation:.3f}",
        *(f"{g.accuracy:.4f}" for f in card.slices.features for g in f.student.groups),  # type: ignore[union-attr]
        *(f"{n:,}" for n in card.data.split_sizes.values()),
    ]
    for number in numbers:
        assert number in markdown and number in page, number
    for reason in card.gate.reasons:
        assert " ".join(reason.split()) in markdown
    # the user's text: verbatim in Markdown (a | cannot break its table: it is in a paragraph), escaped in HTML
    assert "Sorting <b>digits</b> & co | for tests" in markdown
    assert "Sorting &lt;b&gt;digits&lt;/b&gt; &amp; co | for tests" in page and "<b>digits" not in page
    assert "ml-team &lt;ml@example.com&gt;" in page and "<ml@example.com>" not in page


def test_a_section_that_was_off_says_not_computed(registered) -> None:
    run, _, folder = registered
    card = card_of(folder)
    off = build_card(
        details=card.details,
        text=run.cfg.card,
        splits=data_lib.load_splits(run.dataset),
        teacher=card.metrics.teacher,
        student=card.metrics.student,
        fairness=None,
        selection=None,
        teacher_spec=None,
        student_payload=load_model(run.checkpoint)[1],
        explanation=read_explanation(None),
        decision=card.gate,
        triton=run.cfg.triton,
        threads=None,
    )
    assert off.slices is None and off.compression is None and not off.explanation.enabled
    markdown = to_markdown(off)
    for section in ("Metrics by slice (fairness)", "Compression", "Explanations"):
        body = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
        assert body.strip().startswith(f"{NOT_COMPUTED}:"), (section, body)
    assert f"{card.metrics.student.accuracy:.4f}" in markdown  # what was computed is still there


def test_the_registry_keeps_the_card_with_the_version_and_refuses_a_changed_one(registered, tmp_path) -> None:
    run, version, folder = registered
    store = run.cfg.registry
    downloaded = registry.download_model_card(store, version.version, tmp_path / "a")
    assert (
        {p.name for p in downloaded.iterdir()} == set(CARD_FILES.values()) >= set(MODEL_CARD_FILES.values())
    )
    for name in CARD_FILES.values():
        assert (downloaded / name).read_bytes() == (folder / name).read_bytes()
    assert registry.model_card_sha256(store, version.version) == registry.directory_sha256(folder)
    logged = registry.mlflow_client(store).list_artifacts(run.run_id, registry.MODEL_CARD_ARTIFACT)
    assert {Path(f.path).name for f in logged} == set(CARD_FILES.values())

    stored = (
        Path(registry.mlflow_client(store).get_run(run.run_id).info.artifact_uri.removeprefix("file://"))
        / registry.MODEL_CARD_ARTIFACT
        / CARD_FILES["markdown"]
    )
    original = stored.read_bytes()
    stored.write_bytes(original.replace(b"0.", b"9.", 1))
    try:
        with pytest.raises(RegistryError, match=r"model card has digest .* deleted and refused"):
            registry.download_model_card(store, version.version, tmp_path / "b")
    finally:
        stored.write_bytes(original)
    with pytest.raises(NotFoundError, match="version 7 not found"):
        registry.download_model_card(store, "7", tmp_path / "c")


def test_package_ships_the_registered_card_and_checkpoint_and_refuses_others(registered, tmp_path) -> None:
    from slipway.serving.triton_repository import explain_checkpoint

    run, version, folder = registered
    model_dir = steps.package_for_triton(
        run.cfg,
        run.run_id,
        version.version,
        run.chosen,
        run.reference,
        tmp_path / "repo",
        tmp_path / "reference.npz",
        model_card=folder,
        checkpoint=run.checkpoint,
    )
    version_dir = model_dir / version.version
    for name in MODEL_CARD_FILES.values():
        assert (version_dir / name).read_bytes() == (folder / name).read_bytes()
    assert explain_checkpoint(version_dir).read_bytes() == run.checkpoint.read_bytes()  # digest verified
    with np.load(tmp_path / "reference.npz") as ref:
        assert ref["probs"].shape[1] == 10

    changed = tmp_path / "changed-card"
    changed.mkdir()
    for name in CARD_FILES.values():
        (changed / name).write_bytes((folder / name).read_bytes())
    (changed / CARD_FILES["markdown"]).write_text("# a card that was not registered\n")
    with pytest.raises(ArtifactIntegrityError, match="was not packaged"):
        steps.package_for_triton(
            run.cfg, run.run_id, version.version, run.chosen, run.reference, tmp_path / "repo2",
            tmp_path / "reference2.npz", model_card=changed,
        )  # fmt: skip
    with pytest.raises(ArtifactIntegrityError, match=r"checkpoint has sha256 .* was not packaged"):
        steps.package_for_triton(
            run.cfg, run.run_id, version.version, run.chosen, run.reference, tmp_path / "repo3",
            tmp_path / "reference3.npz", model_card=folder, checkpoint=run.teacher,
        )  # fmt: skip
