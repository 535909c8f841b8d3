#!/usr/bin/env bash
# GPU acceptance checks for a machine with a CUDA GPU and PyTorch already installed (not CI: CI has no GPU).
# Runs tests/gpu (DDP + bf16 on one GPU, TensorRT when importable, AOTInductor CUDA packages) and `python -m benchmarks --device cuda --gpu-only`,
# which merges ResNet-50 inference and DDP training images/s into docs/benchmarks{.md,/optimize.json}.
# Usage: bash scripts/gpu-checks.sh OUTDIR   (wheels for packages that machine lacks may wait in .whl/)
set -uo pipefail
out=${1:?usage: scripts/gpu-checks.sh OUTDIR}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/sdk${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } >"$out/env.txt" 2>&1
status=0
python3 -m pytest tests/gpu -p no:cacheprovider -o addopts="" -ra --strict-markers --timeout=300 2>&1 \
  | tee "$out/pytest.log" || status=1
python3 -m benchmarks.compression --device cuda --gpu-only --output docs 2>&1 | tee "$out/bench.log" || status=1
cp docs/benchmarks.md docs/benchmarks/optimize.json "$out/" || status=1
# AOTInductor (#16): the teacher in eager FP32 vs the student's .pt2 in FP32/FP16/BF16 on the GPU (target >= 4x);
# tests/gpu/test_aoti_gpu.py above checks parity, the recorded compute capability and serving at batch 64.
python3 -m benchmarks.aoti --device cuda --output docs 2>&1 | tee "$out/aoti.log" || status=1
cp docs/benchmarks/aoti-gpu.json "$out/" || status=1
exit $status
