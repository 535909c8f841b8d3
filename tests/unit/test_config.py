"""Configuration: presets validate, wrong keys and values are errors naming the key, overrides apply."""

from pathlib import Path

import pytest

from slipway.core.config import (
    PRESETS,
    SlipwayConfig,
    apply_overrides,
    load_config,
    parse_override,
    validate_config,
)
from slipway.core.errors import ConfigError


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_validates(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name
    assert cfg.export.opset >= 17


def test_unknown_key_names_the_dotted_key() -> None:
    with pytest.raises(ConfigError, match=r"train\.epochz: unknown key"):
        load_config("quickstart", ["train.epochz=3"])


def test_bad_value_names_key_and_expectation() -> None:
    with pytest.raises(
        ConfigError, match=r"train\.epochs: Input should be greater than or equal to 1 \(got 0\)"
    ):
        load_config("quickstart", ["train.epochs=0"])


def test_wrong_type_is_reported() -> None:
    with pytest.raises(ConfigError, match=r"gate\.min_accuracy"):
        load_config("quickstart", ["gate.min_accuracy=high"])


def test_override_values_are_parsed_as_yaml() -> None:
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=[8, 16]") == (["a"], [8, 16])
    assert parse_override("a=text") == (["a"], "text")
    cfg = load_config("quickstart", ["train.epochs=7", "triton.preferred_batch_sizes=[4, 8]"])
    assert cfg.train.epochs == 7
    assert cfg.triton.preferred_batch_sizes == [4, 8]


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.epochs")


def test_override_through_a_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_yaml_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed: 5\ntrain:\n  epochs: 2\n")
    cfg = load_config(path, ["seed=6"])
    assert (cfg.seed, cfg.train.epochs) == (6, 2)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="expected one of quickstart"):
        from slipway.core.config import preset

        preset("nope")


def test_preferred_batch_sizes_must_fit_max_batch() -> None:
    with pytest.raises(ConfigError, match="preferred_batch_sizes"):
        validate_config({"triton": {"max_batch_size": 8, "preferred_batch_sizes": [16]}})


def test_config_survives_a_kfp_parameter_round_trip() -> None:
    cfg = load_config("quickstart")
    assert validate_config(cfg.model_dump(mode="json", exclude_none=True)) == cfg


def test_a_yaml_file_is_read_over_the_defaults_not_over_a_preset(tmp_path: Path) -> None:
    """A file is the whole config: keys it leaves out take SlipwayConfig's defaults (not the quickstart
    preset's), and a section it gives in part keeps the defaults of the keys it does not name."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 2\n")
    cfg = load_config(path, ["train.distributed.num_nodes=2"])
    defaults = SlipwayConfig()
    assert cfg.train.label_smoothing == defaults.train.label_smoothing != load_config().train.label_smoothing
    assert cfg.train.lr == defaults.train.lr
    assert cfg.train.distributed.runtime == defaults.train.distributed.runtime


def test_config_survives_a_compact_dump() -> None:
    """The cluster training request carries `exclude_defaults` JSON; it must read back to the same config."""
    for name in PRESETS:
        cfg = load_config(name, ["compress.prune.finetune.epochs=30", "distill.label_smoothing=0.1"])
        assert validate_config(cfg.model_dump(mode="json", exclude_defaults=True)) == cfg
