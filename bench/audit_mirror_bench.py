#!/usr/bin/env python3
"""Audit and mirror benchmark, with ``skopeo`` next to ours on the same artifacts.

Starts its own ``docker-registry`` processes (distribution) on free loopback ports in a
temporary directory (``registry_bench.start_registry``), then:

Audit
    Registry A gets one real published release of this repository's appliance (charts,
    bundle, stand-in images) and ``--releases`` - 1 more signed release manifests whose
    locks point at its artifacts (as CI would after many releases that changed only
    the manifest), plus promotions of ``stable`` and ``nightly``. ``audit`` runs over
    all of it (at concurrency 8 and 1) and the report must be clean; printed: time,
    requests and requests per release. For scale, ``skopeo inspect --raw`` of 50
    version tags is timed and extrapolated (what a shell loop fetching only each
    manifest would cost; it checks nothing).

Mirror
    Registry M gets release 2.0.0 whose control-plane image has one random
    ``--size-mib`` MiB layer, promoted to ``stable``. Then, each checked (digests at the
    destination equal the source's) before it is reported:

    1. ``mirror stable`` M → B (ours) vs ``skopeo copy --all --preserve-digests`` of the
       same artifacts (every pinned artifact, the release manifest, its ``.sig``, the
       channel tag) M → C;
    2. the same again (everything is already there);
    3. through disk: ours ``mirror --to-archive`` (one tar) then ``import`` into D, vs
       skopeo into one ``oci:`` layout directory (no tar) then back out into E.

Usage: ``.venv/bin/python bench/audit_mirror_bench.py [--releases 1000] [--size-mib 256]
[--workdir DIR] [--keep]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from registry_bench import Registry, skopeo, start_registry, timed, write_image  # noqa: E402

from consumer.manifest import (  # noqa: E402
    CONFIG_MEDIA_TYPE,
    manifest_document,
    read_manifest,
    validate_document,
    write_manifest,
)
from consumer.resolve import ResolvedRelease, Resolver  # noqa: E402
from consumer.signatures import TrustStore, build_payload  # noqa: E402
from consumer.verify import pinned_artifacts, verify_release  # noqa: E402
from ocicore.client import RegistryClient  # noqa: E402
from ocicore.copy import copy  # noqa: E402
from ocicore.digest import Digest  # noqa: E402
from ocicore.layout import OCILayout  # noqa: E402
from ocicore.models import (  # noqa: E402
    EMPTY_JSON,
    OCI_EMPTY_CONFIG,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
)
from ocicore.pool import ClientPool  # noqa: E402
from publisher.audit import audit  # noqa: E402
from publisher.mirror import import_archive, mirror, mirror_to_archive  # noqa: E402
from publisher.promote import promote  # noqa: E402
from publisher.publish import (  # noqa: E402
    RELEASE_LAYER_MEDIA_TYPE,
    ControlPlaneBuilder,
    PublishRequest,
    publish,
    release_artifact,
)
from publisher.push import push_immutable  # noqa: E402
from publisher.release_config import ReleaseConfig, load_release_config  # noqa: E402
from publisher.signing import Signer, append_signature  # noqa: E402

MiB = 1024 * 1024
Row = tuple[str, float, float | None]


# -- content -----------------------------------------------------------------------------


def push_app_images(client: RegistryClient, config: ReleaseConfig, version: str) -> None:
    """Small stand-ins for the application images (built by their own pipelines)."""
    for key in sorted(config.images):
        image = config.image(key)
        layer = f"{key}:{image.tag or version}".encode()
        client.push_blob(image.repository, EMPTY_JSON)
        client.push_blob(image.repository, layer)
        manifest = Manifest(schema_version=2, media_type=OCI_MANIFEST,
                            config=Descriptor.of(OCI_EMPTY_CONFIG, EMPTY_JSON),
                            layers=[Descriptor.of("application/vnd.bench.layer", layer)])
        client.push_manifest(image.repository, manifest.to_json(), OCI_MANIFEST,
                             tag=image.tag or version)


def publish_release(client: RegistryClient, config: ReleaseConfig, version: str,
                    signer: Signer, control_plane: ControlPlaneBuilder) -> Digest:
    push_app_images(client, config, version)
    report = publish(client, PublishRequest(
        config=config, root=ROOT, registry=client.registry, version=version,
        source_repository="https://example.invalid/alga/appliance",
        source_revision=f"{version}@sha1:{'0' * 40}", signer=signer,
        build_control_plane=control_plane, plain_http=True, epoch=1_700_000_000, lint=False))
    assert report.digest is not None
    return report.digest


def small_control_plane(client: RegistryClient | None, repository: str, tag: str) -> Digest:
    layer = f"control-plane {tag}".encode()
    manifest = Manifest(schema_version=2, media_type=OCI_MANIFEST,
                        config=Descriptor.of(OCI_EMPTY_CONFIG, EMPTY_JSON),
                        layers=[Descriptor.of("application/vnd.bench.layer", layer)])
    if client is not None:
        client.push_blob(repository, EMPTY_JSON)
        client.push_blob(repository, layer)
        client.push_manifest(repository, manifest.to_json(), OCI_MANIFEST, tag=tag)
    return Digest.of(manifest.to_json())


def big_control_plane(layout: OCILayout, size_mib: int, scratch: Path) -> ControlPlaneBuilder:
    """An image with one random layer, built once into ``layout`` and copied on push."""
    digest = write_image(layout, "bench/control-plane", "big", [size_mib * MiB], scratch)

    def build(client: RegistryClient | None, repository: str, tag: str) -> Digest:
        if client is not None:
            copy(layout, "bench/control-plane", digest, client, repository, tags=[tag])
        return digest

    return build


def seed_releases(client: RegistryClient, config: ReleaseConfig, signer: Signer,
                  count: int) -> None:
    """One published release, then ``count - 1`` signed manifests locking its artifacts."""
    base = publish_release(client, config, "0.1.0", signer, small_control_plane)
    repo = config.release_repository
    parsed = client.get_manifest(repo, base).parse()
    assert isinstance(parsed, Manifest)
    document = manifest_document(read_manifest(client.fetch_blob_bytes(repo, parsed.config)))

    def push(n: int) -> None:
        version = f"1.{n // 100}.{n % 100}"
        release = validate_document({**document, "version": version, "sequence": 1 + n},
                                    what="synthetic release")
        data = write_manifest(release)
        artifact = release_artifact(data, release)
        push_immutable(client, repo, version,
                       [(data, Descriptor.of(CONFIG_MEDIA_TYPE, data)),
                        (data, Descriptor.of(RELEASE_LAYER_MEDIA_TYPE, data))],
                       artifact, OCI_MANIFEST, what="release manifest")
        digest = Digest.of(artifact)
        payload = build_payload(f"{client.registry}/{repo}", digest, version=version,
                                sequence=1 + n, created=release.created_at)
        append_signature(client, repo, digest, payload, signer.sign(payload))

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(push, range(1, count)))


# -- skopeo --------------------------------------------------------------------------------


def closure_refs(resolved: ResolvedRelease) -> list[tuple[str, Digest, str]]:
    """(repository, digest, tag) of everything a mirror of ``resolved`` copies."""
    refs = [(p.reference.repository, p.expected, p.reference.tag or resolved.manifest.version)
            for p in pinned_artifacts(resolved)]
    repo = resolved.repository
    refs.append((repo, resolved.digest, resolved.manifest.version))
    refs.append((repo, resolved.digest, resolved.channel or resolved.manifest.version))
    return refs


def signature_ref(client: RegistryClient, resolved: ResolvedRelease) -> tuple[str, Digest, str]:
    tag = f"{resolved.digest.tag_form}.sig"
    return resolved.repository, client.resolve(resolved.repository, tag).digest, tag


def skopeo_registry(src: str, dst: str, refs: list[tuple[str, Digest, str]]) -> None:
    for repo, digest, tag in refs:
        skopeo("--all", "--src-tls-verify=false", "--dest-tls-verify=false",
               f"docker://{src}/{repo}@{digest}", f"docker://{dst}/{repo}:{tag}")


def skopeo_via_layout(src: str, layout: Path, dst: str,
                      refs: list[tuple[str, Digest, str]]) -> tuple[float, float]:
    def out() -> None:
        for n, (repo, digest, _) in enumerate(refs):
            skopeo("--all", "--src-tls-verify=false", f"docker://{src}/{repo}@{digest}",
                   f"oci:{layout}:ref-{n}")

    def back() -> None:
        for n, (repo, _, tag) in enumerate(refs):
            skopeo("--all", "--dest-tls-verify=false", f"oci:{layout}:ref-{n}",
                   f"docker://{dst}/{repo}:{tag}")

    return timed(out), timed(back)


def check_copies(client: RegistryClient, refs: list[tuple[str, Digest, str]], what: str) -> None:
    for repo, digest, tag in refs:
        found = client.resolve(repo, tag).digest
        if found != digest:
            raise SystemExit(f"{what}: {repo}:{tag} is {found}, expected {digest}")


def skopeo_inspect(host: str, repo: str, tags: list[str]) -> float:
    binary = shutil.which("skopeo")
    assert binary is not None

    def run() -> None:
        for tag in tags:
            subprocess.run([binary, "inspect", "--raw", "--tls-verify=false",
                            f"docker://{host}/{repo}:{tag}"], check=True, capture_output=True)

    return timed(run)


# -- the benchmark -----------------------------------------------------------------------


def bench_audit(base: Path, releases: int, lines: list[str]) -> None:
    config = load_release_config(ROOT / "release.toml")
    signer = Signer(ec.generate_private_key(ec.SECP256R1()))
    trust = TrustStore.from_pem(signer.public_pem())
    registry = start_registry(base / "registry-audit")
    try:
        with RegistryClient(registry.host, credentials=None) as client:
            seconds = timed(lambda: seed_releases(client, config, signer, releases))
            print(f"seeded {releases} releases in {seconds:.1f} s", file=sys.stderr)
            promote(client, config, "1.0.1", "nightly", signer, settle=0)
            promote(client, config, f"1.{(releases - 1) // 100}.{(releases - 1) % 100}",
                    "stable", signer, settle=0)
        for concurrency in (8, 1):
            with RegistryClient(registry.host, credentials=None) as client:
                started = time.perf_counter()
                report = audit(client, config, trust, concurrency=concurrency)
                elapsed = time.perf_counter() - started
            if not report.ok or len(report.releases) != releases:
                raise SystemExit("the audit is not clean:\n" + "\n".join(report.text_lines()))
            lines.append(f"audit {releases} releases, concurrency {concurrency:>2}: "
                         f"{elapsed:6.2f} s, {report.requests} requests, "
                         f"{report.requests_per_release:.2f} requests/release, "
                         f"{releases / elapsed:.0f} releases/s")
        sample = [f"1.{n // 100}.{n % 100}" for n in range(1, min(51, releases))]
        seconds = skopeo_inspect(registry.host, config.release_repository, sample)
        per = seconds / len(sample)
        lines.append(f"reference: skopeo inspect --raw of {len(sample)} version tags: "
                     f"{seconds:.2f} s ({per * releases:.0f} s extrapolated to {releases}; "
                     "it fetches one manifest per release and checks nothing)")
    finally:
        registry.stop()


def bench_mirror(base: Path, size_mib: int, rows: list[Row]) -> None:
    config = load_release_config(ROOT / "release.toml")
    signer = Signer(ec.generate_private_key(ec.SECP256R1()))
    trust = TrustStore.from_pem(signer.public_pem())
    scratch = base / "scratch"
    scratch.mkdir()
    names = ("source", "ours", "skopeo", "ours-import", "skopeo-import")
    started: list[Registry] = []
    try:
        for name in names:
            started.append(start_registry(base / f"registry-{name}"))
        m, b, c, d, e = (r.host for r in started)
        layout = OCILayout(base / "control-plane-layout", create=True)
        builder = big_control_plane(layout, size_mib, scratch)
        with RegistryClient(m, credentials=None) as src:
            publish_release(src, config, "2.0.0", signer, builder)
            promote(src, config, "2.0.0", "stable", signer, settle=0)
            resolved = Resolver(src, config.release_repository, trust,
                                state_path=None).resolve_channel("stable")
            refs = [*closure_refs(resolved), signature_ref(src, resolved)]
            label = f"mirror stable (2.0.0, {size_mib} MiB control plane, {len(refs)} tags)"

            def ours_mirror(dst_host: str) -> Callable[[], Any]:
                def run() -> Any:
                    with RegistryClient(dst_host, credentials=None) as dst:
                        return mirror(src, config, "stable", dst, trust=trust)
                return run

            first = timed(ours_mirror(b))
            theirs = timed(lambda: skopeo_registry(m, c, refs))
            rows.append((f"{label} M -> B", first, theirs))
            again = timed(ours_mirror(b))
            theirs_again = timed(lambda: skopeo_registry(m, c, refs))
            rows.append(("the same again (all present)", again, theirs_again))
            archive = base / "stable.tar"
            to_archive = timed(lambda: mirror_to_archive(src, config, "stable", archive,
                                                          trust=trust))
        with RegistryClient(d, credentials=None) as dst:
            imported = timed(lambda: import_archive(archive, dst, workdir=base))
        out, back = skopeo_via_layout(m, base / "skopeo-layout", e, refs)
        rows.append(("to disk (ours: one tar; skopeo: oci: directory)", to_archive, out))
        rows.append(("from disk into a fresh registry", imported, back))
        for host, what in ((b, "ours"), (c, "skopeo"), (d, "our import"),
                           (e, "skopeo's import")):
            with RegistryClient(host, credentials=None) as client:
                check_copies(client, refs, what)
        for host in (b, d):  # the consumer resolves and verifies at our mirrors
            with RegistryClient(host, credentials=None) as client, \
                    ClientPool(lambda h: client, client) as pool:
                at = Resolver(client, config.release_repository, trust,
                              state_path=None).resolve_channel("stable")
                assert at.digest == resolved.digest
                verify_release(at, pool)
    finally:
        for registry in started:
            registry.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=1000)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--skip-audit", action="store_true")
    parser.add_argument("--skip-mirror", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="audit-mirror-bench-", dir=args.workdir))
    lines: list[str] = []
    rows: list[Row] = []
    try:
        if not args.skip_audit:
            bench_audit(base, args.releases, lines)
        if not args.skip_mirror:
            bench_mirror(base, args.size_mib, rows)
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in lines:
        print(line)
    if rows:
        width = max(len(r[0]) for r in rows)
        print(f"{'operation':<{width}}  {'ours (s)':>9}  {'skopeo (s)':>10}  {'ratio':>6}")
        for name, ours, theirs in rows:
            ratio = f"{theirs / ours:6.2f}" if theirs is not None and ours > 0 else "     -"
            shown = f"{theirs:10.2f}" if theirs is not None else f"{'-':>10}"
            print(f"{name:<{width}}  {ours:>9.2f}  {shown}  {ratio}")
        print("ratio = skopeo time / our time (above 1: ours is faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
