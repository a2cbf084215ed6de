#!/bin/sh
# Roll the appliance control plane forward to the image its channel pins; never back.
#
# Run by appliance-bootstrap.service, at boot and from appliance-bootstrap.timer.
#  1. Until it has worked once: import the baked baseline control-plane image (an OCI
#     archive) into k3s's containerd, so the control plane can start without a registry.
#  2. Ask `appliance-release control-plane-image` for the channel's digest-pinned
#     reference. That command verifies the release signature against $TRUST_FILE and
#     refuses a downgrade (its anti-rollback state lives in $STATE_DIR).
#  3. If the reference differs from the deployed one ($STATE_DIR/control-plane.ref),
#     point the Deployment at it, wait for the rollout, then record it (atomically).
# On failure it logs, exits non-zero and changes nothing further: there is no fallback
# to an older image, what runs keeps running, and the next timer run tries again.
set -eu

ENV_FILE=${APPLIANCE_BOOTSTRAP_ENV:-/etc/appliance/bootstrap.env}
IMAGE_ARCHIVE=${APPLIANCE_IMAGE_ARCHIVE:-/usr/local/lib/appliance/images/control-plane.oci.tar}
NAMESPACE=appliance-system
DEPLOYMENT=appliance-control-plane
CONTAINER=control-plane

log() { printf 'appliance-bootstrap: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ -r "$ENV_FILE" ] || die "cannot read $ENV_FILE"
# shellcheck source=/dev/null
. "$ENV_FILE"
[ -n "${REGISTRY:-}" ] || die "REGISTRY is not set in $ENV_FILE"
[ -n "${CHANNEL:-}" ] || die "CHANNEL is not set in $ENV_FILE"
[ -n "${TRUST_FILE:-}" ] || die "TRUST_FILE is not set in $ENV_FILE"
[ -n "${STATE_DIR:-}" ] || die "STATE_DIR is not set in $ENV_FILE"

mkdir -p "$STATE_DIR"
REF_FILE=$STATE_DIR/control-plane.ref
IMPORTED=$STATE_DIR/baseline-imported

# A failed import must not block updates from the registry: remember it, go on, and
# exit non-zero at the end so the failure stays visible (and is retried next run).
import_failed=
if [ ! -e "$IMPORTED" ] && [ -f "$IMAGE_ARCHIVE" ]; then
    log "importing the baseline control-plane image from $IMAGE_ARCHIVE"
    if k3s ctr --namespace k8s.io images import "$IMAGE_ARCHIVE" >&2; then
        : >"$IMPORTED"
    else
        log "error: importing $IMAGE_ARCHIVE failed; will retry on the next run"
        import_failed=1
    fi
fi

if ! ref=$(appliance-release control-plane-image "$CHANNEL" --registry "$REGISTRY" \
    --trust "$TRUST_FILE" --state "$STATE_DIR/state.json"); then
    die "cannot get channel $CHANNEL's control-plane image from $REGISTRY; keeping the running one"
fi

# Only a single-line repo@sha256:<64 hex> reference is applied.
hex=${ref##*@sha256:}
repo=${ref%@sha256:*}
case $repo in '' | "$ref" | *[!A-Za-z0-9._:/-]*) die "not a digest-pinned reference: '$ref'" ;; esac
case $hex in *[!0-9a-f]*) die "not a digest-pinned reference: '$ref'" ;; esac
[ "${#hex}" -eq 64 ] || die "not a digest-pinned reference: '$ref'"

current=
if [ -f "$REF_FILE" ]; then current=$(cat "$REF_FILE"); fi
if [ "$ref" = "$current" ]; then
    log "control plane is at $ref (up to date)"
else
    log "rolling the control plane forward: ${current:-(none recorded)} -> $ref"
    k3s kubectl --namespace "$NAMESPACE" set image "deployment/$DEPLOYMENT" \
        "$CONTAINER=$ref" >&2 || die "could not set deployment/$DEPLOYMENT to $ref"
    k3s kubectl --namespace "$NAMESPACE" rollout status "deployment/$DEPLOYMENT" \
        --timeout=10m >&2 || die "deployment/$DEPLOYMENT did not roll out $ref; will retry"
    tmp=$REF_FILE.tmp.$$
    printf '%s\n' "$ref" >"$tmp"
    mv -f "$tmp" "$REF_FILE"
    log "control plane now at $ref"
fi

[ -z "$import_failed" ] || exit 1
