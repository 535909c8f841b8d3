"""Triton Python-backend model for a Slipway AOTInductor package; the repository writer copies this file as
REPO/<model>/<version>/model.py beside model.pt2 and its metadata (model.pt2.meta.json).

It imports only what the serving image has (torch pinned to the compiling release, numpy, Triton's
triton_python_backend_utils), never Slipway. At initialize it refuses a package whose bytes, torch release,
device or GPU compute capability do not match its metadata and this instance; execute runs all the requests
Triton batched together as one call and answers each with its own rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

PACKAGE_FILE = "model.pt2"
METADATA_SUFFIX = ".meta.json"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _release(version: str) -> str:
    return version.split("+")[0]


class TritonPythonModel:
    """Triton calls initialize once per instance, execute per batch of requests, finalize at unload."""

    def initialize(self, args: dict[str, str]) -> None:
        package = os.path.join(args["model_repository"], args["model_version"], PACKAGE_FILE)
        with open(package + METADATA_SUFFIX) as fh:
            meta = json.load(fh)
        actual = _sha256(package)
        if actual != meta["sha256"]:
            raise pb_utils.TritonModelException(
                f"{package}: sha256 {actual} does not match its metadata {meta['sha256']}; refusing to load it"
            )
        built_torch = meta.get("torch_version") or "unknown"
        if _release(built_torch) != _release(torch.__version__):
            raise pb_utils.TritonModelException(
                f"{package}: compiled with torch {built_torch}, but this image runs torch {torch.__version__}"
            )
        capability = meta.get("compute_capability")
        device_index = -1
        if capability:
            if args.get("model_instance_kind") != "GPU" or not torch.cuda.is_available():
                raise pb_utils.TritonModelException(
                    f"{package}: compiled for CUDA compute capability {capability}; give the model a GPU "
                    "instance_group (KIND_GPU) on a node with that GPU"
                )
            device_index = int(args.get("model_instance_device_id", "0"))
            have = "{}.{}".format(*torch.cuda.get_device_capability(device_index))
            if have != capability:
                raise pb_utils.TritonModelException(
                    f"{package}: compiled for CUDA compute capability {capability}, but GPU {device_index} "
                    f"has {have}"
                )
        self.device = f"cuda:{device_index}" if capability else "cpu"
        self.input_names = [t["name"] for t in meta["inputs"]]
        self.output_names = [t["name"] for t in meta["outputs"]]
        self.runner: Any = torch._inductor.aoti_load_package(package, device_index=device_index)

    def execute(self, requests: list[Any]) -> list[Any]:
        """One package call for every request Triton batched; a failure answers each request with the error."""
        try:
            per_request = [
                [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_names]
                for r in requests
            ]
            sizes = [len(arrays[0]) for arrays in per_request]
            inputs = [
                torch.from_numpy(np.ascontiguousarray(np.concatenate(column), dtype=np.float32)).to(
                    self.device
                )
                for column in zip(*per_request, strict=True)
            ]
            with torch.inference_mode():
                result = self.runner(*inputs)
            outputs = [
                t.float().cpu().numpy() for t in (result if isinstance(result, list | tuple) else [result])
            ]
        except Exception as err:  # one bad batch must not take the model down: each request gets the error
            error = pb_utils.TritonError(f"AOTInductor package failed on this batch: {err}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, out[start : start + size])
                for name, out in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self.runner = None
