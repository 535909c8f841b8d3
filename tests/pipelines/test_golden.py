"""Golden compilation tests: each pipeline compiles to the committed YAML (volatile fields normalized).

A failure means the pipeline's structure changed: if that was intended, run `make check` locally
(it regenerates tests/pipelines/golden/) and commit the new golden file.
"""

import pytest
from goldens import GOLDEN_DIR, compile_normalized, normalize

from slipway.pipelines import PIPELINES


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_matches_golden(name: str) -> None:
    golden = GOLDEN_DIR / f"{name}.yaml"
    assert golden.is_file(), f"no golden file for {name}: run `make check` and commit {golden}"
    assert compile_normalized(name) == golden.read_text(), f"{golden} is stale: run `make check` and review"


def test_normalize_drops_only_volatile_fields() -> None:
    text = "sdkVersion: kfp-2.17.3\n  image: ghcr.io/org/img:0.1.0\n  image: localhost:5000/img:1\nkeep: 1\n"
    assert normalize(text) == "  image: ghcr.io/org/img:<tag>\n  image: localhost:5000/img:<tag>\nkeep: 1\n"
