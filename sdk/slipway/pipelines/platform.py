"""Cluster settings applied to pipeline tasks at compile time (kfp-kubernetes): the KFP side of `cluster`.

Secrets reach a step only as Kubernetes `secretKeyRef`s (`use_secret_as_env`). A pipeline body calls
`configure_task(task, kind, current_cluster())` on each task; `current_cluster()` is set only while
`build_pipeline` re-runs the pipeline body for `slipway compile`/`submit`, so kfp.local runs and plain imports
see no cluster settings at all.

With `cluster.checkpoints.pvc` set, GPU steps mount that claim and `with_durable_checkpoints` points the
training sections' unset `checkpoint_dir`s at it, so that a retried step (a new pod) resumes.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from slipway.core.cluster_config import (
    CHECKPOINT_MOUNT_PATH_ENV,
    CHECKPOINT_PVC_ENV,
    STEP_KIND_LABEL,
    STEP_KINDS,
    ClusterConfig,
    StepKind,
    StepSettings,
)
from slipway.core.config import SlipwayConfig

if TYPE_CHECKING:
    from kfp.dsl import PipelineTask

log = logging.getLogger(__name__)


_CURRENT: ContextVar[SlipwayConfig | None] = ContextVar("slipway_compiling", default=None)


def current_cluster() -> ClusterConfig | None:
    """The cluster settings of the pipeline being compiled, or None (import time, kfp.local)."""
    cfg = _CURRENT.get()
    return None if cfg is None else cfg.cluster


def trains_as_job(role: Literal["teacher", "student"]) -> bool:
    """Compiling for a cluster, and this role asks for more than one process or node: it runs as a TrainJob."""
    cfg = _CURRENT.get()
    if cfg is None:
        return False
    train = cfg.train if role == "teacher" else cfg.distill
    return train.workers > 1 or train.distributed.num_nodes > 1


@contextmanager
def compiling_for(cfg: SlipwayConfig) -> Iterator[SlipwayConfig]:
    """Make `cfg` what `current_cluster()` and `trains_as_job()` read while a pipeline body is (re)built."""
    token = _CURRENT.set(cfg)
    try:
        yield cfg
    finally:
        _CURRENT.reset(token)


def _inside(path: str, folder: str) -> bool:
    path = posixpath.normpath(path)
    return path == folder or path.startswith(folder + "/")


def with_durable_checkpoints(cfg: SlipwayConfig) -> SlipwayConfig:
    """`cfg` with unset checkpoint folders under the checkpoint claim's mount path (`<mount_path>/<name>`).

    Set at compile time: each cached step gets only its slice of the compiled config. A folder the user set
    is kept, with a warning when it lies outside the mount path (unless on other durable storage, a retried
    step starts over).
    """
    ckpt = cfg.cluster.checkpoints
    if ckpt.pvc is None:
        return cfg
    folder = posixpath.join(ckpt.mount_path, cfg.name)
    update = cfg.model_copy(deep=True)
    sections = {
        "train": update.train,
        "distill": update.distill,
        "compress.prune.finetune": update.compress.prune.finetune,
    }
    for key, section in sections.items():
        if section.checkpoint_dir is None:
            section.checkpoint_dir = folder
        elif not _inside(section.checkpoint_dir, ckpt.mount_path):
            log.warning(
                "%s.checkpoint_dir=%s is not under the claim %s mounted at %s: a retried step may not resume",
                key,
                section.checkpoint_dir,
                ckpt.pvc,
                ckpt.mount_path,
            )
    return update


def configure_task(task: PipelineTask, kind: StepKind, cluster: ClusterConfig | None) -> PipelineTask:
    """Apply secrets, placement, resources, caching, retries and (GPU steps) the checkpoint claim for `kind`;
    a no-op when `cluster` is None."""
    if kind not in STEP_KINDS:
        from slipway.core.errors import ConfigError

        raise ConfigError(f"step kind must be one of {STEP_KINDS}, got {kind!r}")
    if cluster is None:
        return task
    from kfp import kubernetes

    kubernetes.add_pod_label(task, STEP_KIND_LABEL, kind)
    for secret in (cluster.mlflow_secret, cluster.storage_secret):
        if secret is not None:
            # secret key -> env var; only the Secret's name and keys enter the pipeline spec
            kubernetes.use_secret_as_env(
                task, secret.name, {key: env for env, key in secret.env.items()}, optional=secret.optional
            )
    settings: StepSettings = getattr(cluster.steps, kind)
    if kind == "gpu" and cluster.gpu.count > 0:
        from slipway.core.images import GPU_IMAGE

        task.set_container_image(cluster.gpu.image or GPU_IMAGE)
        task.set_accelerator_type(cluster.gpu.accelerator).set_accelerator_limit(cluster.gpu.count)
        for label, value in cluster.gpu.node_selector.items():
            kubernetes.add_node_selector(task, label, value)
        for tol in cluster.gpu.tolerations:
            kubernetes.add_toleration(
                task,
                key=tol.key,
                operator=tol.operator,
                value=tol.value,
                effect=tol.effect,
                toleration_seconds=tol.toleration_seconds,
            )
    if kind == "gpu" and cluster.checkpoints.pvc:
        ckpt = cluster.checkpoints
        kubernetes.mount_pvc(task, pvc_name=ckpt.pvc, mount_path=ckpt.mount_path)
        # A step that trains as a TrainJob/PyTorchJob mounts the same claim in the job's pods (cluster.trainjob).
        task.set_env_variable(CHECKPOINT_PVC_ENV, ckpt.pvc)
        task.set_env_variable(CHECKPOINT_MOUNT_PATH_ENV, ckpt.mount_path)
    if settings.cpu_request:
        task.set_cpu_request(settings.cpu_request)
    if settings.cpu_limit:
        task.set_cpu_limit(settings.cpu_limit)
    if settings.memory_request:
        task.set_memory_request(settings.memory_request)
    if settings.memory_limit:
        task.set_memory_limit(settings.memory_limit)
    task.set_caching_options(enable_caching=settings.caching)
    if settings.retries:
        task.set_retry(
            settings.retries,
            backoff_duration=f"{settings.backoff_s}s",
            backoff_factor=settings.backoff_factor,
            backoff_max_duration=f"{settings.backoff_max_s}s",
        )
    log.debug("configured task %s as %s", task.name, kind)
    return task


def build_pipeline(pipeline: Any, cfg: SlipwayConfig) -> Any:
    """Re-run a `@dsl.pipeline` body with `cfg` (its cluster section) current and return the new pipeline.

    `@dsl.pipeline` runs the body once, at import, when no cluster is set; compiling that object would carry no
    cluster settings, so the body is run again here with the same name, description and pipeline config.
    """
    from kfp import dsl

    func = getattr(pipeline, "pipeline_func", None)
    if func is None:
        raise TypeError(f"{pipeline!r} is not a @dsl.pipeline")
    spec = pipeline.component_spec
    display_name = pipeline.pipeline_spec.pipeline_info.display_name or None
    with compiling_for(cfg):
        return dsl.pipeline(
            func,
            name=spec.name,
            description=spec.description,
            display_name=display_name,
            pipeline_config=pipeline.pipeline_config,
        )
