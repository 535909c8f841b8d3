"""The compression search in a cluster: a Katib Experiment (kubeflow.org/v1beta1), one trial per candidate.

The `kubeflow-katib` SDK pins protobuf<5 (0.19) and cannot live beside this stack's protobuf 6, so the
Experiment is built with typed models here (pydantic, camelCase on the wire, unknown keys rejected), like the
other cluster objects (`slipway.cluster.trainjob`).

Same search as on one machine: one categorical parameter `candidate` whose list is the candidates ordered from
small to large (`slipway.compression.search.plan`), Katib's `grid` algorithm (which walks that list in order),
one trial at a time, and the objective `accuracy_margin_points` (budget minus accuracy drop against the
teacher) maximized with goal 0: Katib ends the Experiment as soon as a trial reaches it, which is the first
candidate within budget. Each trial is a batch/v1 Job running `python -m slipway.steps.search --candidate
KEY`, which prints its metrics as `name=value` lines for Katib's StdOut collector. Trials run apart, so there
is no warm start between them (the local search has it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from slipway.cluster.trainjob import K8sModel, ObjectMeta, ResourceRequirements
from slipway.compression.search import OBJECTIVE
from slipway.core.config import SlipwayConfig
from slipway.core.images import CPU_IMAGE

KATIB_API_VERSION: Literal["kubeflow.org/v1beta1"] = "kubeflow.org/v1beta1"
TRIAL_PARAMETER = "candidate"
METRICS = ("val_accuracy", "drop_points", "throughput_ips_b64", "size_bytes")


class FeasibleSpace(K8sModel):
    list: Sequence[str] = Field(min_length=1)


class ParameterSpec(K8sModel):
    name: str
    parameter_type: Literal["categorical", "discrete", "int", "double"]
    feasible_space: FeasibleSpace


class ObjectiveSpec(K8sModel):
    type: Literal["maximize", "minimize"]
    goal: float | None = None
    objective_metric_name: str
    additional_metric_names: list[str] | None = None


class AlgorithmSpec(K8sModel):
    algorithm_name: Literal[
        "grid", "random", "bayesianoptimization", "tpe", "multivariate-tpe", "cmaes", "hyperband"
    ]


class Collector(K8sModel):
    kind: Literal["StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None"]


class MetricsCollectorSpec(K8sModel):
    collector: Collector


class TrialParameterSpec(K8sModel):
    name: str
    description: str | None = None
    reference: str


class TrialTemplate(K8sModel):
    primary_container_name: str
    success_condition: str | None = None
    failure_condition: str | None = None
    trial_parameters: list[TrialParameterSpec]
    trial_spec: dict[str, Any]  # a batch/v1 Job (built below from typed parts, kept as Katib takes it)


class ExperimentSpec(K8sModel):
    objective: ObjectiveSpec
    algorithm: AlgorithmSpec
    parameters: list[ParameterSpec] = Field(min_length=1)
    parallel_trial_count: int = Field(ge=1)
    max_trial_count: int = Field(ge=1)
    max_failed_trial_count: int = Field(ge=0)
    metrics_collector_spec: MetricsCollectorSpec
    trial_template: TrialTemplate

    @model_validator(mode="after")
    def _template_parameters(self) -> ExperimentSpec:
        """Every `${trialParameters.X}` in the trial spec is declared, and each declared one refers to a parameter."""
        names = {p.name for p in self.parameters}
        declared = {p.name for p in self.trial_template.trial_parameters}
        unknown = [p.reference for p in self.trial_template.trial_parameters if p.reference not in names]
        if unknown:
            raise ValueError(f"trialParameters refer to unknown parameters {unknown}; known: {sorted(names)}")
        text = json.dumps(self.trial_template.trial_spec)
        used = {part.split("}", 1)[0] for part in text.split("${trialParameters.")[1:]}
        if used - declared:
            raise ValueError(f"the trial spec uses undeclared trialParameters {sorted(used - declared)}")
        return self


class Experiment(K8sModel):
    api_version: Literal["kubeflow.org/v1beta1"] = KATIB_API_VERSION
    kind: Literal["Experiment"] = "Experiment"
    metadata: ObjectMeta
    spec: ExperimentSpec


def _trial_job(
    cfg: SlipwayConfig,
    dataset_uri: str,
    teacher_uri: str,
    output_prefix: str,
    image: str,
    cpu: str,
    memory: str,
) -> dict[str, Any]:
    """The batch/v1 Job one trial runs: the same entry point as `python -m slipway.steps.search` locally."""
    config_json = json.dumps(
        cfg.model_dump(mode="json", exclude_defaults=True, exclude={"cluster"}), sort_keys=True
    )
    resources = ResourceRequirements(
        limits={"cpu": cpu, "memory": memory}, requests={"cpu": cpu, "memory": memory}
    )
    container = {
        "name": "search-trial",
        "image": image,
        "command": ["python", "-m", "slipway.steps.search"],
        "args": [
            "--config-json",
            config_json,
            "--dataset-uri",
            dataset_uri,
            "--teacher-uri",
            teacher_uri,
            "--candidate",
            "${trialParameters.candidate}",
            "--output-uri",
            f"{output_prefix.rstrip('/')}/${{trialParameters.candidate}}",
        ],
        "resources": resources.to_dict(),
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def build_experiment(
    cfg: SlipwayConfig,
    candidates: Sequence[str],
    dataset_uri: str,
    teacher_uri: str,
    output_prefix: str,
    name: str | None = None,
    namespace: str = "kubeflow",
    image: str = CPU_IMAGE,
    cpu: str = "2",
    memory: str = "4Gi",
) -> Experiment:
    """The Experiment for `candidates` (keys ordered small to large, from `plan`); `to_dict()` is what to apply."""
    search = cfg.compress.search
    return Experiment(
        metadata=ObjectMeta(
            name=name or f"{cfg.name}-search",
            namespace=namespace,
            labels={"app.kubernetes.io/part-of": "slipway", "slipway.dev/pipeline": cfg.name},
        ),
        spec=ExperimentSpec(
            objective=ObjectiveSpec(
                type="maximize",
                goal=0.0,
                objective_metric_name=OBJECTIVE,
                additional_metric_names=list(METRICS),
            ),
            algorithm=AlgorithmSpec(algorithm_name="grid"),
            parameters=[
                ParameterSpec(
                    name=TRIAL_PARAMETER,
                    parameter_type="categorical",
                    feasible_space=FeasibleSpace(list=list(candidates)),
                )
            ],
            parallel_trial_count=1,  # one at a time, small to large: the goal stops it at the first within budget
            max_trial_count=min(search.max_trials, len(candidates)),
            max_failed_trial_count=0,
            metrics_collector_spec=MetricsCollectorSpec(collector=Collector(kind="StdOut")),
            trial_template=TrialTemplate(
                primary_container_name="search-trial",
                success_condition='status.conditions.#(type=="Complete")#|#(status=="True")#',
                failure_condition='status.conditions.#(type=="Failed")#|#(status=="True")#',
                trial_parameters=[
                    TrialParameterSpec(
                        name=TRIAL_PARAMETER,
                        description="student candidate key (wW-sS)",
                        reference=TRIAL_PARAMETER,
                    )
                ],
                trial_spec=_trial_job(cfg, dataset_uri, teacher_uri, output_prefix, image, cpu, memory),
            ),
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """Print the Experiment as YAML for `kubectl apply -f -` (the dataset gives the candidates' order)."""
    import argparse
    import sys
    import tempfile
    from pathlib import Path

    import yaml

    from slipway.cluster.storage import download
    from slipway.compression.search import plan
    from slipway.core.config import load_config
    from slipway.core.data import load_splits

    parser = argparse.ArgumentParser(prog="python -m slipway.cluster.katib")
    parser.add_argument("--config", default=None, help="YAML file or preset (default: quickstart)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--dataset-uri", required=True, help="the data step's dataset (a .npz path or URI)")
    parser.add_argument("--teacher-uri", required=True, help="the trained teacher checkpoint (model.pt)")
    parser.add_argument(
        "--output-prefix", required=True, help="object-storage folder for the trials' outputs"
    )
    parser.add_argument("-n", "--namespace", default="kubeflow")
    ns = parser.parse_args(argv)
    cfg = load_config(ns.config, ns.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        splits = load_splits(download(ns.dataset_uri, Path(tmp) / "dataset.npz"))
    keys = [c.key for c in plan(cfg.compress.search, cfg.student, splits.input_shape, splits.num_classes)]
    experiment = build_experiment(
        cfg, keys, ns.dataset_uri, ns.teacher_uri, ns.output_prefix, namespace=ns.namespace
    )
    sys.stdout.write(yaml.safe_dump(experiment.to_dict(), sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
