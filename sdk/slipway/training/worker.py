"""Entry point of one torchrun worker: `torchrun ... -m slipway.training.worker REQUEST.json`.

Every rank joins the process group, calls the request's `module:function(**kwargs)` and leaves the group;
rank 0 writes the function's JSON result (or the SlipwayError message) to the request's result file.
In a cluster (TrainJob, PyTorchJob) the ranks run `slipway.steps.cluster_train` instead.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from slipway.core.errors import SlipwayError
from slipway.core.logs import setup_logging
from slipway.training import distributed

log = logging.getLogger("slipway.training.worker")


def _resolve(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    function = getattr(importlib.import_module(module_name), attr, None)
    if not callable(function):
        raise SlipwayError(f"distributed worker: {target!r} is not a callable 'module:function'")
    return function


def _quiet_other_ranks(rank: int) -> None:
    """Rank 0 speaks for the job; other ranks log warnings and errors only."""
    setup_logging()
    if rank != 0:
        logging.getLogger("slipway").setLevel(logging.WARNING)


def run_request(request_path: Path) -> int:
    """Run one launcher request on this rank; returns the process exit code."""
    request = json.loads(request_path.read_text())
    _quiet_other_ranks(int(os.environ.get("RANK", "0")))
    threads = os.environ.get("SLIPWAY_THREADS_PER_PROCESS")
    if threads:
        torch.set_num_threads(int(threads))
    result_path = Path(request["result"])
    env = distributed.init_process_group(request["kwargs"].get("device", "auto"))
    try:
        try:
            result = _resolve(request["target"])(**request["kwargs"])
            payload: dict[str, Any] = {"result": result}
        except SlipwayError as err:  # a deliberate failure: its message reaches the caller verbatim
            log.error("rank %d: %s", env.rank, err)
            payload = {"error": str(err)}
        if env.is_main:
            tmp = result_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload))
            os.replace(tmp, result_path)
        return 0 if "result" in payload else 1
    finally:
        distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: torchrun ... -m slipway.training.worker REQUEST.json\n")
        return 2
    return run_request(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
