"""Model zoo and user factories: any 1D/2D input size, clear errors, safe checkpoints."""

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from slipway.core.config import ModelSpec
from slipway.core.errors import ModelError
from slipway.core.models import ZOO, build_model, count_parameters, load_model, save_model


@pytest.mark.parametrize("architecture", sorted(ZOO))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 40), (2, 7)])
def test_zoo_builds_for_any_input_size(architecture: str, shape: tuple[int, ...]) -> None:
    model = build_model(ModelSpec(architecture=architecture), shape, num_classes=5).eval()
    out = model(torch.zeros(3, *shape))
    assert out.shape == (3, 5)


def test_student_has_at_most_a_quarter_of_teacher_params() -> None:
    for shape in [(1, 8, 8), (1, 40)]:
        teacher = count_parameters(build_model(ModelSpec(architecture="teacher_cnn"), shape, 10))
        student = count_parameters(build_model(ModelSpec(architecture="student_cnn"), shape, 10))
        assert student * 4 <= teacher


def test_cnn_rejects_tabular_input() -> None:
    with pytest.raises(ModelError, match=r"\(C, L\) or \(C, H, W\)"):
        build_model(ModelSpec(architecture="teacher_cnn"), (12,), 3)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn

            def tiny(input_shape, num_classes, hidden=8):
                n = 1
                for d in input_shape:
                    n *= d
                return nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

            def not_a_model(input_shape, num_classes):
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models"
    sys.modules.pop("my_models", None)


def test_user_factory_gets_shape_classes_and_kwargs(user_module: str) -> None:
    model = build_model(ModelSpec(architecture=f"{user_module}:tiny", kwargs={"hidden": 4}), (2, 3), 6)
    assert model(torch.zeros(1, 2, 3)).shape == (1, 6)
    assert count_parameters(model) == 6 * 4 + 4 + 4 * 6 + 6


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ("nosuch", "expected one of"),
        ("no_such_module_xyz:f", "cannot import"),
        ("my_models:missing", "no callable 'missing'"),
        ("my_models:not_a_model", "returned int, not nn.Module"),
    ],
)
def test_bad_factories_are_explained(user_module: str, architecture: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        build_model(ModelSpec(architecture=architecture), (4,), 2)


def test_bad_kwargs_are_explained(user_module: str) -> None:
    with pytest.raises(ModelError, match="rejected its arguments"):
        build_model(ModelSpec(architecture=f"{user_module}:tiny", kwargs={"depth": 3}), (4,), 2)


def test_checkpoint_round_trip_uses_weights_only(tmp_path: Path) -> None:
    spec = ModelSpec(architecture="student_cnn")
    model = build_model(spec, (1, 8, 8), 10).eval()
    save_model(model, spec, (1, 8, 8), 10, tmp_path / "m.pt")
    loaded, payload = load_model(tmp_path / "m.pt")
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))
    assert payload["num_classes"] == 10


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    torch.save({"spec": ModelSpec(architecture="mlp"), "x": object()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="not a loadable Slipway model checkpoint"):
        load_model(tmp_path / "evil.pt")
