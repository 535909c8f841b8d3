"""Regenerate the golden files the tests compare against (`make check` runs this, then fails on a diff)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

GOLDEN_DIR = Path("tests/pipelines/golden")


def normalize(text: str) -> str:
    """Drop what changes without a change in the pipeline: SDK version, image tags, KFP's header comment
    (it prints dict defaults in hash order)."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("sdkVersion:", "#")):
            continue
        match = re.match(r"^(\s*image: [^\s:]+(?::\d+)?(?:/[^\s:]+)*):\S+$", line)
        lines.append(f"{match.group(1)}:<tag>" if match else line)
    return "\n".join(lines) + "\n"


def compile_normalized(name: str) -> str:
    """Compile a pipeline with its default preset and return the normalized YAML."""
    import tempfile

    from slipway.compile import compile_pipeline
    from slipway.config import load_config
    from slipway.pipelines import get_pipeline

    entry = get_pipeline(name)
    with tempfile.TemporaryDirectory() as tmp:
        out = compile_pipeline(entry, load_config(entry.preset), Path(tmp) / f"{name}.yaml")
        text = out.read_text()
    list(yaml.safe_load_all(text))  # must stay valid YAML (a platform spec is a second document)
    return normalize(text)


def main() -> int:
    from slipway.pipelines import PIPELINES
    from slipway.trainjob import write_goldens

    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for name in PIPELINES:
        (GOLDEN_DIR / f"{name}.yaml").write_text(compile_normalized(name))
    write_goldens(Path("tests/unit/golden/trainjob"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
