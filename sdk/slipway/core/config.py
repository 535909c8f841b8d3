"""Typed pipeline configuration: validated when built, loaded from YAML or a named preset, `--set` overrides.

A wrong key or value raises ConfigError naming the dotted key and what was expected. A raw dict is read over
the defaults: a section given in part keeps the default of every key it does not name, at any depth; lists and
free-form mappings (`kwargs`, `env`, ...) are replaced whole.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from slipway.core.cluster_config import ClusterConfig
from slipway.core.drift_rule import DriftRule
from slipway.core.errors import ConfigError, problems_message, validation_problems
from slipway.core.schema import StrictModel

PRESETS = ("quickstart", "mnist1d", "optimize", "drift", "fairness")


class DataConfig(StrictModel):
    source: str = Field(
        "digits",
        description="'digits', 'digits-groups', 'mnist1d', or a path or URI (s3://, file://, http(s)://) of an "
        ".npz with x, y (optional x_test, y_test; optional x_recent, y_recent: a held-out split only the gate "
        "evaluates on; group_<name>: group labels) or of a tabular .csv",
    )
    sensitive_features: list[str] = Field(
        default_factory=list,
        description="group labels for the fairness report: CSV columns (never used as features) or NPZ arrays "
        "group_<name>; empty: every group_<name> array an NPZ holds (docs/fairness.md)",
    )
    label_column: str = Field("y", min_length=1, description="CSV sources: the column of integer class ids")
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="ignored when the npz holds x_test/y_test")
    reference_samples: int = Field(1000, ge=10, description="rows kept as the drift reference sample")
    max_train_samples: int | None = Field(None, ge=10, description="subsample training data (experiments)")


class ModelSpec(StrictModel):
    architecture: str = Field(
        description="zoo name (teacher_cnn, student_cnn, mlp) or 'package.module:function'"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DistributedConfig(StrictModel):
    """Where multi-node training runs: a Kubeflow Trainer TrainJob or a Training Operator PyTorchJob.

    The job writes the trained model to `artifact_uri_prefix/<job name>/model.pt`, which the next step reads.
    """

    engine: Literal["trainjob", "pytorchjob"] = Field(
        "trainjob", description="trainjob: Kubeflow Trainer v2; pytorchjob: Training Operator v1"
    )
    runtime: str = Field(
        "torch-distributed", min_length=1, description="ClusterTrainingRuntime a TrainJob refers to"
    )
    num_nodes: int = Field(1, ge=1, le=1024, description="pods (nodes); one torchrun agent per node")
    gpus_per_node: int = Field(1, ge=0, le=16, description="nvidia.com/gpu per node, one process per GPU")
    cpu_per_node: str | None = Field(None, description="CPU request/limit per node, e.g. '8' (None: unset)")
    memory_per_node: str | None = Field(None, description="memory request/limit per node, e.g. '64Gi'")
    namespace: str = Field("kubeflow", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    artifact_uri_prefix: str = Field(
        "s3://slipway/distributed", min_length=1, description="object-storage folder for job outputs"
    )
    timeout_s: float = Field(6 * 3600, gt=0, description="fail the step when the job has not finished")
    poll_interval_s: float = Field(10.0, gt=0, le=600)
    elastic_min_nodes: int | None = Field(
        None, ge=1, description="PyTorchJob only: elasticPolicy.minReplicas (None: not elastic)"
    )
    elastic_max_restarts: int = Field(3, ge=0, description="PyTorchJob elasticPolicy.maxRestarts")
    env: dict[str, str] = Field(
        default_factory=dict, description="plain environment for the trainer (e.g. MLFLOW_TRACKING_URI)"
    )
    secret_env: dict[str, str] = Field(
        default_factory=dict,
        description="environment from Kubernetes secrets: NAME -> 'secret-name:key' (credentials)",
    )

    @model_validator(mode="after")
    def _secret_refs(self) -> DistributedConfig:
        bad = [k for k, v in self.secret_env.items() if v.count(":") != 1 or "" in v.split(":")]
        if bad:
            raise ValueError(f"secret_env {bad}: values must look like 'secret-name:key'")
        if self.elastic_min_nodes is not None and self.elastic_min_nodes > self.num_nodes:
            raise ValueError("elastic_min_nodes must not exceed num_nodes")
        return self


# Shared by the sections that redeclare them (another default, or the same keys on another base).
Epochs = Annotated[int, Field(ge=1, le=10_000)]
LearningRate = Annotated[float, Field(gt=0, le=10)]
Temperature = Annotated[float, Field(gt=0, description="softmax temperature of the soft (teacher) loss")]
SoftWeight = Annotated[float, Field(ge=0, le=1, description="weight of the soft (teacher) loss")]


class LoopConfig(StrictModel):
    """What `slipway.training.loop.train` reads in one process; every training section has these keys."""

    epochs: Epochs = 30
    batch_size: int = Field(64, ge=1)
    lr: LearningRate = 3e-3
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(6, ge=1, description="stop after this many epochs without a better val accuracy")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="on the hard-label cross-entropy (also its term in distillation)"
    )
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads per process")
    checkpoint_dir: str | None = Field(
        None, description="stable folder: a rerun resumes from it (None: no resume)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when available (one GPU per process), else CPU"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast dtype on CUDA (fp16 adds a GradScaler); CPU always trains in fp32"
    )


class TrainConfig(LoopConfig):
    """A training step: the loop's keys, and how the step spreads over local processes or a cluster."""

    workers: int = Field(1, ge=1, le=64, description="processes for DistributedDataParallel (1: no DDP)")
    sync_batchnorm: bool = Field(
        True, description="SyncBatchNorm under DDP on CUDA (gloo on CPU cannot: per-rank statistics)"
    )
    distributed: DistributedConfig = Field(
        default_factory=lambda: DistributedConfig.model_validate({}),
        description="cluster training (components/train_distributed)",
    )


class DistillConfig(TrainConfig):
    temperature: Temperature = 4.0
    alpha: SoftWeight = 0.7


class FinetuneConfig(LoopConfig):
    """Distillation after pruning, inside the prune step: one process, so no DDP or cluster keys.

    Its defaults are its own (not DistillConfig's), so a partial section and a compact dump
    (`exclude_defaults`) both mean epochs 15, lr 1e-3.
    """

    epochs: Epochs = 15
    lr: LearningRate = 1e-3
    temperature: Temperature = 4.0
    alpha: SoftWeight = 0.7


class ExportConfig(StrictModel):
    opset: int = Field(18, ge=17, le=23)
    parity_atol: float = Field(1e-4, gt=0, description="max abs logit difference, FP32")
    parity_min_agreement: float = Field(0.999, gt=0, le=1, description="top-1 agreement, FP32")
    parity_samples: int = Field(512, ge=1)


class EvaluateConfig(StrictModel):
    warmup: int = Field(10, ge=0)
    latency_iterations: int = Field(200, ge=10, description="batch-1 calls per repeat")
    throughput_iterations: int = Field(20, ge=1, description="batch-64 calls per repeat")
    repeats: int = Field(5, ge=1, description="the median over repeats is reported")
    threads: int | None = Field(None, ge=1, description="intra-op threads (None: all cores)")


class GateConfig(StrictModel):
    min_accuracy: float = Field(0.95, ge=0, le=1)
    max_accuracy_drop: float = Field(0.02, ge=0, le=1, description="student vs teacher, as a fraction")
    max_latency_ms_p99: float = Field(50.0, gt=0)
    champion_margin: float = Field(0.01, ge=0, le=1, description="allowed accuracy loss vs current champion")
    # Fairness rules (docs/fairness.md): off by default; each applies to every sensitive feature of the data.
    min_worst_group_accuracy: float | None = Field(
        None, ge=0, le=1, description="the student's accuracy on its worst group must reach this"
    )
    max_group_accuracy_gap: float | None = Field(
        None, ge=0, le=1, description="the student's best-minus-worst group accuracy must not exceed this"
    )
    max_worst_group_drop_vs_teacher: float | None = Field(
        None, ge=0, le=1, description="teacher's minus student's worst-group accuracy must not exceed this"
    )


ExplainMethod = Literal["integrated_gradients", "saliency", "occlusion"]


class ExplainConfig(StrictModel):
    """Attributions of teacher and student on the test split after format selection (docs/explanations.md)."""

    enabled: bool = Field(
        True, description="false: the explain step writes an empty report and the card says so"
    )
    methods: list[ExplainMethod] = Field(
        default_factory=lambda: list(get_args(ExplainMethod)),
        min_length=1,
        description="Captum methods; the first is the one compared between teacher and student",
    )
    samples: int = Field(
        200, ge=1, le=100_000, description="test rows explained (a stratified, seeded sample)"
    )
    steps: int = Field(32, ge=2, le=1024, description="Integrated Gradients steps")
    examples: int = Field(
        3, ge=0, le=50, description="most and least confident test examples shown, each side"
    )
    sanity_max_correlation: float = Field(
        0.5,
        ge=-1,
        le=1,
        description="the sanity check fails when the attributions of the weight-randomized model keep a rank "
        "correlation above this with the trained model's (Adebayo et al. 2018)",
    )


class ModelCardConfig(StrictModel):
    """The user-editable text of the model card written for every registered version (docs/model-card.md)."""

    intended_use: str = Field(
        "Classifying inputs like those of the training data; a compressed student of the teacher trained here.",
        description="what the model is for and who should use it",
    )
    limitations: str = Field(
        "Only evaluated on the held-out split of the training data; accuracy on other populations is unknown.",
        description="known limits, out-of-scope uses and caveats",
    )
    owners: list[str] = Field(default_factory=list, description="people or teams to contact")


class RegistryConfig(StrictModel):
    tracking_uri: str | None = Field(
        None, description="None: $MLFLOW_TRACKING_URI, else SQLite in the output"
    )
    experiment: str = "slipway"
    artifact_location: str | None = Field(
        None, description="for a new experiment; None: the server's default"
    )
    model_name: str = Field("slipway-quickstart", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    promote: bool = Field(
        True,
        description="false: a version that passes the gate stays `challenger` and the champion keeps its alias "
        "(an A/B experiment decides: slipway experiment)",
    )


class TritonConfig(StrictModel):
    max_batch_size: int = Field(64, ge=0)
    preferred_batch_sizes: list[int] = Field(default_factory=lambda: [8, 16, 32])
    max_queue_delay_us: int = Field(500, ge=0)
    dynamic_batching: bool = Field(
        True,
        description="false: no dynamic_batching block; each request runs as sent (batched by the client)",
    )
    instance_count: int = Field(1, ge=1)
    instance_kind: Literal["KIND_CPU", "KIND_GPU", "KIND_AUTO"] = "KIND_CPU"
    tensorrt_accelerator: bool = Field(
        False,
        description="ONNX models: let Triton's ONNX Runtime backend run them through TensorRT (FP16, GPU)",
    )

    @model_validator(mode="after")
    def _preferred_within_max(self) -> TritonConfig:
        too_big = [b for b in self.preferred_batch_sizes if b > self.max_batch_size or b < 1]
        if self.max_batch_size and too_big:
            raise ValueError(f"preferred_batch_sizes {too_big} must lie in 1..max_batch_size")
        return self


CalibrationMethod = Literal["minmax", "entropy", "percentile"]
OptimizedFormat = Literal["onnx-fp32", "onnx-pruned-fp32", "onnx-int8", "onnx-fp16", "aoti-fp32"]
OPTIMIZED_FORMATS: tuple[OptimizedFormat, ...] = (
    "onnx-fp32",
    "onnx-pruned-fp32",
    "onnx-int8",
    "onnx-fp16",
    "aoti-fp32",
)
# aoti-fp32 (the pruned student as a torch.export + AOTInductor package) is opt-in: compiling it takes tens of
# seconds and a C++ compiler, and the cluster serves it only where a Triton image with the same torch exists.
DEFAULT_CANDIDATES: tuple[OptimizedFormat, ...] = OPTIMIZED_FORMATS[:4]


class PruneConfig(StrictModel):
    """Pruning the student, then recovering accuracy by distillation (see docs/optimization.md)."""

    method: Literal["structured", "unstructured", "none"] = Field(
        "structured",
        description="structured: remove whole channels (torch-pruning, smaller and faster); "
        "unstructured: zero single weights by magnitude (sparsity only, same size and speed)",
    )
    ratio: float = Field(0.3, ge=0, lt=1, description="fraction of channels (or weights) to remove")
    ratios: list[float] | None = Field(
        None,
        description="search the ratio: each is tried from the largest down (the smallest model first) and the "
        "first whose fine-tuned validation accuracy stays within max_drop_points of the unpruned student's is "
        "kept, else the smallest ratio; null: `ratio` alone",
    )
    max_drop_points: float = Field(
        0.5, ge=0, le=100, description="with `ratios`: validation accuracy, in points, that pruning may cost"
    )
    importance: Literal["l1", "l2", "bn_scale"] = Field("l2", description="how channels are ranked")
    iterative_steps: int = Field(1, ge=1, le=100, description="prune in this many rounds")
    round_to: int | None = Field(None, ge=1, description="keep channel counts multiples of this")
    finetune: FinetuneConfig = Field(
        default_factory=FinetuneConfig,
        description="distillation fine-tuning after pruning (epochs=0 is not allowed: it always recovers)",
    )

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if not value or any(not 0 <= r < 1 for r in value) or len(set(value)) != len(value):
            raise ValueError(f"expected distinct fractions in [0, 1), at least one; got {value}")
        return sorted(value, reverse=True)


class QuantizeConfig(StrictModel):
    """Post-training quantization with ONNX Runtime; each output is checked against FP32 ONNX."""

    int8: bool = Field(True, description="static INT8, QDQ format (also what TensorRT consumes)")
    fp16: bool = Field(True, description="FP16 weights and activations (GPU formats; slow on most CPUs)")
    calibration_method: CalibrationMethod = "minmax"
    fallback_calibration_method: CalibrationMethod | None = Field(
        "percentile", description="tried after keeping the first and last layers in FP32 did not suffice"
    )
    calibration_samples: int = Field(256, ge=8, description="training-split samples used for calibration")
    per_channel: bool = Field(True, description="per-output-channel weight scales")
    activation_type: Literal["uint8", "int8"] = Field(
        "uint8", description="uint8: best on x86 CPUs (VNNI); int8 (symmetric): required by TensorRT"
    )
    accuracy_budget_points: float = Field(
        1.0, ge=0, le=100, description="max test accuracy drop vs the FP32 ONNX model, in points"
    )
    parity_min_agreement: float = Field(0.99, gt=0, le=1, description="top-1 agreement with FP32 ONNX")
    fallback_fp32_nodes: bool = Field(
        True, description="over budget: retry with the first and last layers' nodes kept in FP32"
    )


class TensorRTConfig(StrictModel):
    """TensorRT engine build (GPU image only): precision, optimization profile, workspace, timing cache.

    Whether it is built is the optimize pipeline's parameter `build_tensorrt_engine`, not a config key.
    """

    fp16: bool = True
    int8: bool = Field(False, description="build from the INT8 QDQ model (explicit quantization)")
    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(64, ge=1)
    max_batch: int = Field(256, ge=1)
    workspace_mb: int = Field(1024, ge=16)
    timing_cache: str | None = Field(None, description="timing cache file, reused across builds")
    parity_min_agreement: float = Field(0.99, gt=0, le=1)

    @model_validator(mode="after")
    def _batch_order(self) -> TensorRTConfig:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"need min_batch <= opt_batch <= max_batch, got {self.min_batch}, {self.opt_batch}, "
                f"{self.max_batch}"
            )
        return self


class SearchConfig(StrictModel):
    """The compression search: distil candidate students from small to large and keep the first (the fastest)
    whose validation accuracy is within `accuracy_budget_points` of the teacher (docs/optimization.md)."""

    enabled: bool = Field(
        False,
        description="true: the search step replaces the fixed `student` (the quickstart preset sets it)",
    )
    accuracy_budget_points: float = Field(
        1.0,
        ge=0,
        le=100,
        description="validation accuracy a candidate may lose vs the teacher, in points; keep it at most "
        "gate.max_accuracy_drop (in points) minus compress.accuracy_budget_points, which pruning and "
        "quantization may still spend, so that the result passes the gate",
    )
    time_budget_s: float = Field(
        900.0, gt=0, description="no new candidate starts after this: the best one found so far is kept"
    )
    widths: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [8, 16, 32], min_length=1, description="student_cnn `width` values"
    )
    stages: list[Annotated[int, Field(ge=1, le=8)]] = Field(
        default_factory=lambda: [2, 3], min_length=1, description="student_cnn `stages` values (depth)"
    )
    max_trials: int = Field(8, ge=1, le=100, description="at most this many candidates are distilled")
    warm_start: bool = Field(
        True, description="start each candidate from the previous one's weights where the layers match"
    )


class CompressConfig(StrictModel):
    """Compression between distillation and evaluation; the fastest candidate within budget is shipped."""

    search: SearchConfig = Field(default_factory=SearchConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    accuracy_budget_points: float = Field(
        1.0, ge=0, le=100, description="a candidate may lose at most this much test accuracy vs the source"
    )
    candidates: list[OptimizedFormat] = Field(
        default_factory=lambda: list(DEFAULT_CANDIDATES),
        description="formats the optimizer may choose from (aoti-fp32 is opt-in, see docs/optimization.md)",
    )


class OptimizeSourceConfig(StrictModel):
    """What the optimize pipeline starts from: a registered version (name + version or alias) or a file."""

    model_name: str | None = Field(None, description="registered model; None: registry.model_name")
    version: str | None = Field(None, description="a version number; None: use `alias`")
    alias: str = Field("champion", description="used when `version` is None")
    checkpoint: str | None = Field(
        None, description="a Slipway PyTorch checkpoint (.pt) to optimize instead of a registered version"
    )


class DeployConfig(StrictModel):
    """Where the last step puts the packaged model: a local served smoke test, or a KServe canary."""

    target: Literal["local", "kserve", "none"] = "local"
    name: str | None = Field(None, description="InferenceService name; None: registry.model_name")
    namespace: str = "slipway"
    canary_traffic_percent: int | None = Field(10, ge=1, le=100, description="None: replace at once")
    logger_url: str | None = Field(None, description="payload logger sink: the drift monitor's /events")
    prometheus_url: str | None = Field(None, description="for the canary's error-rate and p99 analysis")
    service_account: str | None = None
    explainer: bool = Field(
        False,
        description="kserve target: add an explainer (slipway serve on the CPU image) answering "
        "/v1/models/MODEL:explain with the version's PyTorch checkpoint; ONNX only",
    )
    ready_timeout_s: float = Field(600.0, gt=0)
    analysis_s: float = Field(
        300.0, ge=0, description="analysis window: the canary must pass checks this long to be promoted"
    )
    analysis_interval_s: float = Field(
        30.0, gt=0, description="seconds between canary checks (Flagger's analysis.interval)"
    )
    failure_threshold: int = Field(
        2, ge=1, description="failed checks, in total, that roll the canary back (Flagger's threshold)"
    )
    serve_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="local target: a running `slipway serve --model-control-mode explicit` to update in "
        "place (the new version is copied into serve_repository and loaded); None: a throwaway server "
        "smoke-tests the package",
    )
    serve_repository: str | None = Field(None, description="the model repository the serve_url server serves")

    @model_validator(mode="after")
    def _serve_pair(self) -> DeployConfig:
        if (self.serve_url is None) != (self.serve_repository is None):
            raise ValueError("serve_url and serve_repository: give both (update a running server) or neither")
        return self


class MonitorConfig(DriftRule):
    """The recurring drift pipeline: which captured window to check against which reference, and what then.

    The alarm rule's keys (`family_alpha`, `alarm_share`) come from DriftRule, shared with the monitor.
    """

    url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="the drift monitor's base URL (in a cluster: http://<release>-monitor.<namespace>:8081); "
        "set, the window and the reference are fetched from it and data_dir/reference are not read",
    )
    data_dir: str = Field("/data", description="the drift monitor's capture store, read when url is unset")
    reference: str = Field("/reference/reference.npz", description="reference sample saved at training time")
    window_size: int = Field(500, ge=30, description="most recent captured events compared")
    retrain: bool = Field(False, description="run the training pipeline again when drift is detected")
    retrain_pipeline: str = Field(
        "quickstart", description="the pipeline named in the hint printed when retrain_package is missing"
    )
    retrain_package: str | None = Field(
        None,
        description="the training pipeline compiled with its own config (`slipway compile quickstart -c ... "
        "-o retrain.yaml`; a path or URI): what an alarm runs again, on new data",
    )
    retrain_target: Literal["kubeflow", "local"] = Field(
        "kubeflow", description="kubeflow: submit to kfp_host; local: run it here with kfp.local"
    )
    retrain_overrides: list[str] = Field(
        default_factory=list,
        description="KEY=VALUE settings applied to the package's config for the retrain run "
        "(e.g. deploy.serve_url=... to update a local server)",
    )
    min_labels: int = Field(
        50, ge=2, description="labelled rows (feedback joined by inference id) the window needs to retrain"
    )
    recent_test_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="part of the labelled rows held out as the gate's recent test split (never trained on)",
    )
    kfp_host: str | None = Field(None, description="Kubeflow Pipelines API for the retraining run")


class SlipwayConfig(StrictModel):
    name: str = Field("quickstart", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: ModelSpec = Field(default_factory=lambda: ModelSpec(architecture="teacher_cnn"))
    student: ModelSpec = Field(default_factory=lambda: ModelSpec(architecture="student_cnn"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    card: ModelCardConfig = Field(default_factory=ModelCardConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    triton: TritonConfig = Field(default_factory=TritonConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    source: OptimizeSourceConfig = Field(default_factory=OptimizeSourceConfig)
    cluster: ClusterConfig = Field(
        default_factory=lambda: ClusterConfig(), description="Kubeflow task settings applied at compile time"
    )


def _format_validation_error(err: ValidationError) -> str:
    return problems_message("invalid configuration", validation_problems(err, unknown_hint=_did_you_mean))


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The config model under a field: the section itself, or the item of an optional, list or mapping."""
    section = _section_model(annotation)
    if section is not None:
        return section
    for arg in get_args(annotation):
        inner = _nested_model(arg)
        if inner is not None:
            return inner
    return None


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections and leaves."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        section = _nested_model(field.annotation)
        if section is not None:
            keys += _keys(section, f"{prefix}{name}.")
    return keys


def _did_you_mean(loc: tuple[str | int, ...]) -> str:
    """The key an unknown key was probably meant to be: a sibling spelled alike (`train.epochz` ->
    `train.epochs`, `trian` -> `train`), else the same key in other sections (`gate.epochs`)."""
    parts = [str(p) for p in loc]
    model: type[BaseModel] | None = SlipwayConfig
    for part in parts[:-1]:  # a list index or mapping key on the way keeps the model of the items
        field = model.model_fields.get(part) if model else None
        if field is not None:
            model = _nested_model(field.annotation)
    siblings = list(model.model_fields) if model else []
    close = difflib.get_close_matches(parts[-1], siblings, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{'.'.join([*parts[:-1], close[0]])}`?"
    elsewhere = [key for key in _keys(SlipwayConfig) if key.rsplit(".", 1)[-1] == parts[-1]]
    if elsewhere:
        shown = ", ".join(f"`{key}`" for key in elsewhere[:3]) + (", ..." if len(elsewhere) > 3 else "")
        return f"; it is a key of another section: {shown}"
    return "; `slipway config show` lists the keys"


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds (alone or with None): given as a mapping, it merges over its default."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        models = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def _merge_sections(
    model: type[BaseModel], defaults: dict[str, Any], given: dict[str, Any]
) -> dict[str, Any]:
    """`given` merged over `defaults` section by section; any other value (a list, a free-form mapping, a
    scalar, None, a mapping where a scalar belongs) replaces the default, so validation judges it as given."""
    merged = dict(defaults)
    for key, value in given.items():
        field = model.model_fields.get(key)
        section = _section_model(field.annotation) if field is not None else None
        default = merged.get(key)
        if section is not None and isinstance(value, dict) and isinstance(default, dict):
            merged[key] = _merge_sections(section, default, value)
        else:
            merged[key] = value
    return merged


NULL = "~"  # YAML's other spelling of null: how an explicit null travels in a KFP parameter


def _nulls_back(value: Any) -> Any:
    if value == NULL:
        return None
    if isinstance(value, dict):
        return {k: _nulls_back(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulls_back(v) for v in value]
    return value


def to_parameter(cfg: SlipwayConfig, exclude: set[str] | None = None) -> dict[str, Any]:
    """The config as a KFP `dict` parameter (what `validate_config` reads back to the same config).

    A protobuf Struct cannot hold null: a null that is also the default is left out, and one that replaces a
    non-null default (`compress.quantize.fallback_calibration_method: null`) travels as NULL.
    """

    def encode(value: Any, default: Any) -> Any:
        if isinstance(value, dict):
            defaults = default if isinstance(default, dict) else {}
            return {
                k: NULL if v is None else encode(v, defaults.get(k))
                for k, v in value.items()
                if v is not None or defaults.get(k) is not None
            }
        return value

    return encode(cfg.model_dump(mode="json", exclude=exclude), SlipwayConfig().model_dump(mode="json"))


def validate_config(raw: dict[str, Any]) -> SlipwayConfig:
    """Build a config from a plain dict (YAML, a KFP parameter) read over the defaults; errors name the key.

    Sections merge over their enclosing defaults (a partial `compress.prune.finetune` keeps epochs 15), so a
    file, a `--set` or a step's slice of the config means the same whatever else it leaves out.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration must be a mapping, got {type(raw).__name__}")
    try:
        return SlipwayConfig.model_validate(
            _merge_sections(SlipwayConfig, SlipwayConfig().model_dump(mode="json"), _nulls_back(raw))
        )
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def preset(name: str) -> dict[str, Any]:
    """The raw dict of a named preset shipped with the package."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    text = resources.files("slipway").joinpath("presets", f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b=c` into (["a", "b"], parsed YAML value of c)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE with a dotted key, got {item!r}")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {value!r} is not valid YAML: {err}") from None
    return [p for p in key.strip().split(".")], parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set a.b=c` overrides to a raw config dict (a copy is returned)."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: {'.'.join(path[: i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return out


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> SlipwayConfig:
    """Load a preset name or a YAML file (default: the quickstart preset) and apply overrides."""
    if source is None or str(source) in PRESETS:
        raw = preset(str(source or "quickstart"))
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; expected a YAML file or one of {PRESETS}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    return validate_config(apply_overrides(raw, overrides or []))
