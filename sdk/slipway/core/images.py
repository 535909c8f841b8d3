"""Container image names, tagged with the package version in this one place."""

from __future__ import annotations

from slipway import __version__

REGISTRY = "ghcr.io/slipway-ml"

# Matched releases: the GPU image builds TensorRT plans with the same TensorRT as the Triton serving image.
TRITON_RELEASE = "25.06"  # CUDA 12.9.1; NGC 25.06 containers ship TensorRT 10.11.0.33
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
TENSORRT_VERSION = "10.11.0"

CPU_IMAGE = f"{REGISTRY}/slipway-cpu:{__version__}"
GPU_IMAGE = f"{REGISTRY}/slipway-gpu:{__version__}-trt{TENSORRT_VERSION}"

# image -> Dockerfile under components/images/ that builds it
DOCKERFILES = {
    CPU_IMAGE: "Dockerfile.cpu",
    GPU_IMAGE: "Dockerfile.gpu",
}
