"""Fixtures for tests/charts: render the chart and the kustomize targets with the real binaries (cached)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from chart_helpers import Objects, helm_template_text, kustomize_text, load_documents


@pytest.fixture
def render_chart() -> Callable[..., Objects]:
    """Render the chart (cached per values) as a list of objects."""

    def render(values_file: Path | None = None, *set_values: str) -> Objects:
        return load_documents(helm_template_text(values_file, tuple(set_values)))

    return render


@pytest.fixture
def kustomize_build() -> Callable[[Path], Objects]:
    """Render one kustomize target with the real kubectl (kustomize built in)."""
    return lambda target: load_documents(kustomize_text(target))
