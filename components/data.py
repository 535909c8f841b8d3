"""Component: load and split the data, save the drift reference sample, open the MLflow run."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_data(config: dict, run_key: str, dataset: Output[Dataset], reference: Output[Dataset]) -> str:
    """Returns the MLflow run id every later step logs into."""
    from pathlib import Path

    from slipway import steps

    info = steps.prepare_data(steps.begin(config), run_key, Path(dataset.path), Path(reference.path))
    dataset.metadata.update(info.model_dump(exclude={"run_id"}))
    reference.metadata.update({"fingerprint": info.fingerprint, "purpose": "drift reference"})
    return info.run_id
