"""Component: load and split the data and save the drift reference sample (cached: its slice only)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_data(config: dict, dataset: Output[Dataset], reference: Output[Dataset]):
    from pathlib import Path

    from slipway import steps

    info = steps.prepare_data(steps.begin(config), Path(dataset.path), Path(reference.path))
    dataset.metadata.update(info.model_dump())
    reference.metadata.update({"fingerprint": info.fingerprint, "purpose": "drift reference"})
