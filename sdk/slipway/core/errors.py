"""One exception root, so the CLI and the servers can turn every deliberate failure into a clear message."""

from __future__ import annotations


class SlipwayError(Exception):
    """A failure Slipway explains to the user: the message says what was wrong and what to do.

    `http_status` says how a server reports it (4xx; 503 only for load shedding); the CLI prints the
    message without a traceback and exits with `exit_code`.
    """

    http_status: int = 400
    exit_code: int = 1


class ConfigError(SlipwayError):
    """A configuration key or value is wrong; the message names the key and what was expected."""

    exit_code = 2


class DataError(SlipwayError):
    """A dataset is missing, malformed, or of an unsupported shape."""


class ModelError(SlipwayError):
    """A model factory cannot be found, imported or called."""


class TrainingError(SlipwayError):
    """Training cannot go on (for example the loss became NaN)."""


class ExportError(SlipwayError):
    """A model could not be exported, or the export disagrees with its source (parity check)."""


class ArtifactIntegrityError(SlipwayError):
    """An artifact's bytes do not match the sha256 recorded in its metadata: it is refused."""

    http_status = 409


class RegistryError(SlipwayError):
    """The MLflow registry refused an operation or holds something unexpected."""


class TritonConfigError(SlipwayError):
    """A Triton model configuration is invalid or does not match its model."""


class NotFoundError(SlipwayError):
    """A named thing (model, tensor, run, report) does not exist."""

    http_status = 404


class OverloadedError(SlipwayError):
    """The server sheds load: its queue is full. Retry later."""

    http_status = 503


class PayloadTooLargeError(SlipwayError):
    """A request body exceeds the server's `--max-body-bytes`; it is refused before being buffered."""

    http_status = 413


class ClusterError(SlipwayError):
    """A Kubernetes or Kubeflow API call failed or timed out."""
