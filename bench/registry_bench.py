#!/usr/bin/env python3
"""Registry transfer benchmark: our client (``ocicore.copy``) next to ``skopeo copy``.

Starts two ``docker-registry`` processes (distribution) on free loopback ports in a
temporary directory, then times, for each tool, on the same data:

1. push an image holding one random blob of ``--size-mib`` MiB (default 512) from an OCI
   layout directory into a registry (ours into registry A, skopeo into registry B, both
   fresh, so neither can skip or mount);
2. pull that image from registry A into a fresh OCI layout directory;
3. copy a set of 5 artifacts (a few MiB each, 2-4 layers) from registry A to registry B
   (ours: 5 ``copy`` calls; skopeo: 5 ``skopeo copy`` invocations).

Every result is checked (the digest at the destination is the source's) before it is
reported. skopeo runs with ``--preserve-digests`` so it neither recompresses nor
converts. Prints a table: operation, ours (s), skopeo (s), ratio (skopeo / ours; above 1
means ours is faster).

Usage: ``.venv/bin/python bench/registry_bench.py [--size-mib 512] [--workdir DIR] [--keep]``
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ocicore.client import RegistryClient  # noqa: E402
from ocicore.copy import copy  # noqa: E402
from ocicore.digest import Digest  # noqa: E402
from ocicore.jsonutil import canonical_json  # noqa: E402
from ocicore.layout import OCILayout  # noqa: E402
from ocicore.models import OCI_IMAGE_CONFIG, OCI_MANIFEST, Descriptor, Manifest  # noqa: E402

MiB = 1024 * 1024
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
SET_LAYER_MIB = ((1, 3), (2, 2, 2), (4, 1), (1, 1, 1, 1), (3, 2, 1))  # 5 artifacts, 25 MiB


# -- registries ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    host: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_registry(workdir: Path) -> Registry:
    """A ``docker-registry serve`` on a free port, anonymous, plain HTTP, ready."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("docker-registry is not installed (apt-get install docker-registry)")
    workdir.mkdir(parents=True)
    port = _free_port()
    config = {
        "version": 0.1,
        "log": {"level": "error", "formatter": "json", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    config_file = workdir / "config.json"  # YAML is a superset of JSON
    config_file.write_text(json.dumps(config))
    with (workdir / "registry.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    registry = Registry(f"127.0.0.1:{port}", process)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"docker-registry exited; see {workdir / 'registry.log'}")
        with contextlib.suppress(httpx.TransportError):
            httpx.get(f"http://{registry.host}/v2/", timeout=1)
            return registry
        time.sleep(0.05)
    registry.stop()
    raise SystemExit(f"docker-registry did not answer on {registry.host}")


# -- content -----------------------------------------------------------------------------


def _random_file(path: Path, size: int) -> Digest:
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        remaining = size
        while remaining:
            chunk = os.urandom(min(16 * MiB, remaining))
            hasher.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
    return Digest("sha256", hasher.hexdigest())


def write_image(
    layout: OCILayout, repo: str, tag: str, layer_sizes: list[int], scratch: Path
) -> Digest:
    """An image of random uncompressed layers in ``layout``; returns its digest."""
    layers = []
    for i, size in enumerate(layer_sizes):
        path = scratch / f"layer-{i}"
        digest = _random_file(path, size)
        layout.push_blob(repo, path, digest)
        path.unlink()
        layers.append(Descriptor(media_type=LAYER_TAR, digest=digest, size=size))
    config = canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in layers]},
        }
    )
    layout.push_blob(repo, config)
    manifest = Manifest(
        schema_version=2,
        media_type=OCI_MANIFEST,
        config=Descriptor.of(OCI_IMAGE_CONFIG, config),
        layers=layers,
    )
    return layout.push_manifest(repo, manifest.to_json(), OCI_MANIFEST, tag=tag)


# -- timing ------------------------------------------------------------------------------


def skopeo(*args: str) -> None:
    binary = shutil.which("skopeo")
    if binary is None:
        raise SystemExit("skopeo is not installed (apt-get install skopeo)")
    result = subprocess.run(
        [binary, "--insecure-policy", "copy", "--quiet", "--preserve-digests", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"skopeo copy {' '.join(args)} failed:\n{result.stderr}")


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def expect(actual: Digest, expected: Digest, what: str) -> None:
    if actual != expected:
        raise SystemExit(f"{what}: digest {actual}, expected {expected}")


@contextlib.contextmanager
def registries(base: Path) -> Iterator[tuple[Registry, Registry]]:
    a = start_registry(base / "registry-a")
    try:
        b = start_registry(base / "registry-b")
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def run(base: Path, size_mib: int) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = []
    scratch = base / "scratch"
    scratch.mkdir()
    print(
        f"preparing a {size_mib} MiB random image and a 5-artifact set in {base} …", file=sys.stderr
    )
    big = OCILayout(base / "big-layout", create=True)
    big_digest = write_image(big, "bench/big", "v1", [size_mib * MiB], scratch)
    set_layout = OCILayout(base / "set-layout", create=True)
    set_digests = [
        write_image(set_layout, f"bench/set-{n}", f"set-{n}", [m * MiB for m in sizes], scratch)
        for n, sizes in enumerate(SET_LAYER_MIB)
    ]
    set_mib = sum(sum(sizes) for sizes in SET_LAYER_MIB)

    with (
        registries(base) as (a, b),
        RegistryClient(a.host, credentials=None) as client_a,
        RegistryClient(b.host, credentials=None) as client_b,
    ):
        # 1. push: layout -> registry (ours into A, skopeo into B; both fresh)
        ours = timed(lambda: copy(big, "bench/big", "v1", client_a, "bench/big"))
        expect(client_a.resolve("bench/big", "v1").digest, big_digest, "our push")
        theirs = timed(
            lambda: skopeo(
                f"oci:{big.path}:v1", f"docker://{b.host}/bench/big:v1", "--dest-tls-verify=false"
            )
        )
        expect(client_b.resolve("bench/big", "v1").digest, big_digest, "skopeo's push")
        rows.append((f"push {size_mib} MiB image (OCI layout -> registry)", ours, theirs))

        # 2. pull: registry A -> fresh layout directories
        pulled = base / "pulled-ours"
        ours = timed(
            lambda: copy(client_a, "bench/big", "v1", OCILayout(pulled, create=True), "bench/big")
        )
        expect(OCILayout(pulled).resolve("bench/big", "v1").digest, big_digest, "our pull")
        pulled_skopeo = base / "pulled-skopeo"
        theirs = timed(
            lambda: skopeo(
                f"docker://{a.host}/bench/big:v1",
                f"oci:{pulled_skopeo}:v1",
                "--src-tls-verify=false",
            )
        )
        expect(
            OCILayout(pulled_skopeo).resolve("bench/big", "v1").digest, big_digest, "skopeo's pull"
        )
        rows.append((f"pull {size_mib} MiB image (registry -> OCI layout)", ours, theirs))

        # 3. the 5-artifact set, seeded into A (untimed), then A -> B with each tool
        for n in range(len(SET_LAYER_MIB)):
            copy(set_layout, f"bench/set-{n}", f"set-{n}", client_a, f"bench/set-{n}", tags=["v1"])

        def ours_set() -> None:
            for n in range(len(SET_LAYER_MIB)):
                copy(client_a, f"bench/set-{n}", "v1", client_b, f"ours/set-{n}")

        def skopeo_set() -> None:
            for n in range(len(SET_LAYER_MIB)):
                skopeo(
                    f"docker://{a.host}/bench/set-{n}:v1",
                    f"docker://{b.host}/skopeo/set-{n}:v1",
                    "--src-tls-verify=false",
                    "--dest-tls-verify=false",
                )

        ours = timed(ours_set)
        theirs = timed(skopeo_set)
        for n, digest in enumerate(set_digests):
            expect(client_b.resolve(f"ours/set-{n}", "v1").digest, digest, "our set copy")
            expect(client_b.resolve(f"skopeo/set-{n}", "v1").digest, digest, "skopeo's set copy")
        rows.append((f"copy 5 artifacts, {set_mib} MiB, registry A -> B", ours, theirs))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512, help="size of the big blob")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where registries and layouts go (default: a temp dir)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="registry-bench-", dir=args.workdir))
    try:
        rows = run(base, args.size_mib)
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'ours (s)':>9}  {'skopeo (s)':>10}  {'ratio':>6}")
    for name, ours, theirs in rows:
        print(f"{name:<{width}}  {ours:>9.2f}  {theirs:>10.2f}  {theirs / ours:>6.2f}")
    print("ratio = skopeo time / our time (above 1: ours is faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
