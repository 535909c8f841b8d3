#!/usr/bin/env bash
# Install torch==VERSION, alone and first, into the venv of PYTHON (used by `make install` and
# scripts/constraints.py). Its dependencies are not installed here (--no-deps): they come with the project in the
# next step, pinned by constraints.txt, from the usual index.
#
# INDEX is where torch comes from: the Makefile passes PyTorch's CPU wheel index by default
# (https://download.pytorch.org/whl/cpu: a CPU build, about 0.2 GB, no CUDA libraries); empty means pip's own
# indexes (PyPI's Linux x86_64 torch is a CUDA build of several GB); a CUDA index such as
# https://download.pytorch.org/whl/cu128 picks that CUDA build. pip's configured find-links and extra indexes still
# apply, so a machine that serves torch from a local file (and cannot reach download.pytorch.org) still installs
# it: pip warns about the unreachable index, retries twice, and takes the local file.
# When that fails too, this falls back to pip's own indexes and says so.
#
# Usage: bash scripts/install-torch.sh PYTHON VERSION [INDEX]
set -euo pipefail

die() { echo "install-torch: error: $*" >&2; exit 1; }
log() { echo "install-torch: $*" >&2; }

[[ $# -ge 2 && $# -le 3 && -n "$1" && -n "$2" ]] || die "usage: $0 PYTHON VERSION [INDEX]"
PY="$1"
VERSION="$2"
INDEX="${3-}"

installed_version() {
  "$PY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true
}

if [[ -n "$INDEX" ]]; then
  log "torch==${VERSION} from ${INDEX} (TORCH_INDEX= for pip's default index)"
  if "$PY" -m pip install --quiet --no-deps --retries 2 --timeout 30 --index-url "$INDEX" "torch==${VERSION}"; then
    log "installed torch $(installed_version)"
    exit 0
  fi
  log "torch==${VERSION} could not be installed from ${INDEX}: falling back to pip's default indexes" \
    "(on Linux x86_64, PyPI's torch is a CUDA build of several GB)"
fi
"$PY" -m pip install --quiet --no-deps "torch==${VERSION}" || die "pip could not install torch==${VERSION}"
log "installed torch $(installed_version)"
