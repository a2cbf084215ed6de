#!/usr/bin/env bash
# The release pipeline, as CI runs it (and as anyone can run it by hand).
#
#   ci/release.sh nightly [VERSION]          publish VERSION and move the nightly channel
#   ci/release.sh promote VERSION [CHANNEL]  promote a published VERSION (default: stable)
#
# VERSION defaults to "$(cat VERSION)-nightly.<commit count>.<short sha>" (SemVer pre-release,
# ordered by commit count). Environment:
#   APPLIANCE_RELEASE_REGISTRY_URL   registry host[:port] (required)
#   APPLIANCE_RELEASE_USERNAME/_PASSWORD  registry credentials (or a docker login beforehand)
#   APPLIANCE_RELEASE_SIGNING_KEY    the signing key PEM (CI secret), or
#   APPLIANCE_RELEASE_KEY_FILE       a path to it;  APPLIANCE_RELEASE_KEY_PASSWORD if encrypted
#   APPLIANCE_RELEASE_CLI            the CLI to run (default: .venv/bin/appliance-release)
#   APPLIANCE_RELEASE_IMAGE_TAGS     space-separated KEY=TAG of the application images
#   APPLIANCE_RELEASE_CONFIG         the release definition (default: release.toml)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "ci/release.sh: $*" >&2; exit 2; }
[[ $# -ge 1 ]] || die "usage: ci/release.sh nightly [VERSION] | promote VERSION [CHANNEL]"
: "${APPLIANCE_RELEASE_REGISTRY_URL:?set APPLIANCE_RELEASE_REGISTRY_URL to the registry host}"
cli=${APPLIANCE_RELEASE_CLI:-$PWD/.venv/bin/appliance-release}
config=${APPLIANCE_RELEASE_CONFIG:-release.toml}
[[ -x $cli ]] || die "$cli not found; run ./scripts/setup.sh first"

key_file=${APPLIANCE_RELEASE_KEY_FILE:-}
if [[ -z $key_file ]]; then
    [[ -n ${APPLIANCE_RELEASE_SIGNING_KEY:-} ]] || die "set APPLIANCE_RELEASE_SIGNING_KEY or APPLIANCE_RELEASE_KEY_FILE"
    key_file=$(mktemp)
    trap 'rm -f "$key_file"' EXIT
    chmod 600 "$key_file"
    printf '%s\n' "$APPLIANCE_RELEASE_SIGNING_KEY" > "$key_file"
fi

case $1 in
nightly)
    version=${2:-}
    if [[ -z $version ]]; then
        base=$(cat VERSION)
        version="$base-nightly.$(git rev-list --count HEAD).$(git rev-parse --short=12 HEAD)"
    fi
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
    tags=()
    for pair in ${APPLIANCE_RELEASE_IMAGE_TAGS:-}; do tags+=(--image-tag "$pair"); done
    exec "$cli" publish --config "$config" --version "$version" --channel nightly \
        --key "$key_file" "${tags[@]}"
    ;;
promote)
    [[ $# -ge 2 ]] || die "usage: ci/release.sh promote VERSION [CHANNEL]"
    exec "$cli" promote "$2" "${3:-stable}" --config "$config" --key "$key_file"
    ;;
*)
    die "unknown step '$1' (nightly or promote)"
    ;;
esac
