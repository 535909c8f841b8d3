"""Container image names, tagged with the package version in this one place."""

from __future__ import annotations

from slipway import __version__

REGISTRY = "ghcr.io/slipway-ml"

# Matched releases: the GPU image builds TensorRT plans with the same TensorRT as the Triton serving image.
TRITON_RELEASE = "25.06"  # CUDA 12.9.1; NGC 25.06 containers ship TensorRT 10.11.0.33
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
TENSORRT_VERSION = "10.11.0"

# AOTInductor packages (.pt2) run only on the torch release that compiled them: the Triton image that serves
# them through its Python backend pins this torch (the one constraints.txt and the Slipway images install), and
# a CUDA package runs only on the compute capability it was compiled for (the cluster's serving GPU nodes).
AOTI_TORCH_VERSION = "2.13.0"
SERVING_COMPUTE_CAPABILITY = "9.0"  # H100/H200 serving nodes; compile CUDA packages on the same GPU

CPU_IMAGE = f"{REGISTRY}/slipway-cpu:{__version__}"
GPU_IMAGE = f"{REGISTRY}/slipway-gpu:{__version__}-trt{TENSORRT_VERSION}"
# TRITON_IMAGE plus torch AOTI_TORCH_VERSION for the Python backend: serves .pt2 packages (ClusterServingRuntime
# slipway-triton-torch); it holds no Slipway code (the model folder's model.py imports only torch and numpy).
TRITON_TORCH_IMAGE = (
    f"{REGISTRY}/slipway-triton-torch:{__version__}-{TRITON_RELEASE}-torch{AOTI_TORCH_VERSION}"
)

# image -> Dockerfile under images/ (the repository's top-level folder) that builds it
DOCKERFILES = {
    CPU_IMAGE: "Dockerfile.cpu",
    GPU_IMAGE: "Dockerfile.gpu",
    TRITON_TORCH_IMAGE: "Dockerfile.triton-torch",
}
# The images that carry the Slipway project (installed with constraints.txt); the others only serve models.
PROJECT_IMAGES = (CPU_IMAGE, GPU_IMAGE)
