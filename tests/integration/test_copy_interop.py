"""``copy`` between registries and OCI layouts, and interoperability with skopeo:
skopeo reads what we push and what we write (layout directory and tar), we read what
skopeo writes, and digests survive every hop."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from ocicore.client import RegistryClient
from ocicore.copy import copy
from ocicore.credentials import Credentials
from ocicore.digest import Digest
from ocicore.jsonutil import canonical_json
from ocicore.layout import OCILayout
from ocicore.models import (
    OCI_IMAGE_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
)
from ocicore.store import ContentStore
from tests.registry import RegistryFactory, RegistryInstance
from tests.tools import require_tool

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Pushed:
    image: Digest  # an image manifest, tag "v1"
    index: Digest  # an index of two images, tag "multi"
    image_bytes: bytes
    index_bytes: bytes


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzipped tar layer and its diff ID."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0), "sha256:" + hashlib.sha256(
        raw.getvalue()
    ).hexdigest()


def _push_image(store: ContentStore, repo: str, arch: str, salt: str) -> bytes:
    """Config + 2 layers, a real (tiny) linux image; returns the manifest bytes."""
    layers = [
        _layer({f"etc/{salt}-{arch}": f"{salt} {arch}\n".encode()}),
        _layer({"data/blob": hashlib.sha256(salt.encode()).digest() * 20_000}),
    ]
    config = canonical_json(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
        }
    )
    store.push_blob(repo, config)
    for data, _ in layers:
        store.push_blob(repo, data)
    manifest = Manifest(
        schema_version=2,
        media_type=OCI_MANIFEST,
        config=Descriptor.of(OCI_IMAGE_CONFIG, config),
        layers=[Descriptor.of(OCI_LAYER_GZIP, data) for data, _ in layers],
    )
    data = manifest.to_json()
    store.push_manifest(repo, data, OCI_MANIFEST)
    return data


def _push_set(store: ContentStore, repo: str) -> Pushed:
    salt = uuid.uuid4().hex
    image = _push_image(store, repo, "amd64", salt)
    store.push_manifest(repo, image, OCI_MANIFEST, tag="v1")
    arm = _push_image(store, repo, "arm64", salt)
    index = Index(
        schema_version=2,
        media_type=OCI_INDEX,
        manifests=[
            Descriptor(
                media_type=OCI_MANIFEST,
                digest=Digest.of(data),
                size=len(data),
                platform=Platform(architecture=arch, os="linux"),
            )
            for data, arch in ((image, "amd64"), (arm, "arm64"))
        ],
    ).to_json()
    store.push_manifest(repo, index, OCI_INDEX, tag="multi")
    return Pushed(Digest.of(image), Digest.of(index), image, index)


def _repo(prefix: str) -> str:
    return f"interop/{prefix}-{uuid.uuid4().hex[:8]}"


def _client(instance: RegistryInstance) -> RegistryClient:
    creds = Credentials(instance.username, instance.password) if instance.username else None
    return RegistryClient(instance.host, credentials=creds, ca_file=instance.ca_file)


def _skopeo(*args: str) -> str:
    skopeo = require_tool("skopeo")
    result = subprocess.run(
        [skopeo, "--insecure-policy", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"skopeo {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def _raw_digest(transport_ref: str, *flags: str) -> Digest:
    raw = subprocess.run(
        [require_tool("skopeo"), "inspect", "--raw", *flags, transport_ref],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    return Digest.of(raw)


def test_registry_to_layout_to_second_registry(
    registry: RegistryInstance, registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    second = registry_factory()
    repo = _repo("hop")
    with _client(registry) as source, _client(second) as target:
        pushed = _push_set(source, repo)
        layout = OCILayout(tmp_path / "layout", create=True)
        first = copy(source, repo, "v1", layout, repo)
        multi = copy(source, repo, "multi", layout, repo)
        assert (first.digest, multi.digest) == (pushed.image, pushed.index)
        assert multi.manifests_copied == 2  # index + arm64 image; amd64 came with v1
        assert multi.manifests_skipped == 1
        assert layout.list_tags(repo) == ["multi", "v1"]

        for tag, digest in (("v1", pushed.image), ("multi", pushed.index)):
            result = copy(layout, repo, tag, target, "mirrored/app")
            assert result.digest == digest
            assert target.resolve("mirrored/app", tag).digest == digest
        fetched = target.get_manifest("mirrored/app", "multi")
        assert fetched.data == pushed.index_bytes and fetched.media_type == OCI_INDEX
        index = fetched.parse()
        assert isinstance(index, Index)
        for child in index.manifests:
            assert target.resolve("mirrored/app", child.digest).digest == child.digest


def test_skopeo_reads_our_push_and_we_read_skopeos_layout(
    registry: RegistryInstance, registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    repo = _repo("skopeo-pull")
    with _client(registry) as client:
        pushed = _push_set(client, repo)
    oci_dir = tmp_path / "skopeo-layout"
    for tag in ("v1", "multi"):
        _skopeo(
            "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
            f"docker://{registry.host}/{repo}:{tag}", f"oci:{oci_dir}:{tag}",
        )  # fmt: skip
    assert _raw_digest(f"oci:{oci_dir}:v1") == pushed.image
    assert _raw_digest(f"oci:{oci_dir}:multi") == pushed.index
    inspected = json.loads(_skopeo("inspect", f"oci:{oci_dir}:v1"))
    assert inspected["Digest"] == str(pushed.image)
    assert inspected["Architecture"] == "amd64"

    layout = OCILayout(oci_dir)  # the layout skopeo wrote
    assert layout.resolve("any/repo", "v1").digest == pushed.image
    assert sorted(layout.list_tags("any/repo")) == ["multi", "v1"]
    second = registry_factory()
    with _client(second) as target:
        for tag, digest in (("v1", pushed.image), ("multi", pushed.index)):
            result = copy(layout, "any/repo", tag, target, "from/skopeo")
            assert result.digest == digest
            assert target.resolve("from/skopeo", tag).digest == digest
        assert target.get_manifest("from/skopeo", "multi").data == pushed.index_bytes


def test_skopeo_reads_our_layout_directory_and_tar(
    registry: RegistryInstance, tmp_path: Path
) -> None:
    repo = _repo("skopeo-push")
    with _client(registry) as client:
        pushed = _push_set(client, repo)
        layout = OCILayout(tmp_path / "ours", create=True)
        copy(client, repo, "v1", layout, repo)
        copy(client, repo, "multi", layout, repo)
        archive = tmp_path / "ours.tar"
        layout.write_tar(archive)

        assert _raw_digest(f"oci:{layout.path}:v1") == pushed.image
        inspected = json.loads(_skopeo("inspect", f"oci:{layout.path}:v1"))
        assert inspected["Digest"] == str(pushed.image)
        assert _raw_digest(f"oci-archive:{archive}:multi") == pushed.index
        inspected = json.loads(_skopeo("inspect", f"oci-archive:{archive}:v1"))
        assert inspected["Digest"] == str(pushed.image)

        # skopeo pushes our tar into a registry; the digests are ours
        for tag, digest in (("v1", pushed.image), ("multi", pushed.index)):
            _skopeo(
                "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
                f"oci-archive:{archive}:{tag}", f"docker://{registry.host}/{repo}-bys:{tag}",
            )  # fmt: skip
            assert client.resolve(f"{repo}-bys", tag).digest == digest

        # and we read the oci-archive skopeo writes
        skopeo_tar = tmp_path / "skopeo.tar"
        _skopeo(
            "copy", "--preserve-digests", "--src-tls-verify=false",
            f"docker://{registry.host}/{repo}:v1", f"oci-archive:{skopeo_tar}:v1",
        )  # fmt: skip
        from_skopeo = OCILayout.from_tar(skopeo_tar, tmp_path / "extracted")
        assert from_skopeo.resolve(repo, "v1").digest == pushed.image
        result = copy(from_skopeo, repo, "v1", client, f"{repo}-fromtar")
        assert result.digest == pushed.image and result.blobs_copied == 3


def test_second_copy_transfers_no_blob_bytes(
    registry: RegistryInstance, registry_factory: RegistryFactory
) -> None:
    second = registry_factory()
    repo = _repo("twice")
    with _client(registry) as source, _client(second) as target:
        pushed = _push_set(source, repo)
        first = copy(source, repo, "multi", target, "copy/twice")
        assert first.digest == pushed.index
        assert first.blobs_copied == 5  # 2 configs, 2 arch layers, 1 layer both share
        assert first.bytes_copied > 0
        uploaded, since = target.stats.bytes_uploaded, len(second.access_log())
        again = copy(source, repo, "multi", target, "copy/twice")
        assert again.digest == pushed.index
        assert again.bytes_copied == 0 and again.blobs_copied == 0
        assert again.manifests_copied == 0 and again.manifests_skipped == 1
        assert target.stats.bytes_uploaded == uploaded
        log = second.access_log()[since:]
        assert not [r for r in log if r.method in ("POST", "PATCH", "PUT")], log


def test_copy_within_token_registry_mounts_across_repositories(
    registry_token: RegistryInstance,
) -> None:
    source_repo, target_repo = _repo("mount-src"), _repo("mount-dst")
    with _client(registry_token) as client:
        pushed = _push_set(client, source_repo)
        uploaded = client.stats.bytes_uploaded
        since = len(registry_token.access_log())
        server = registry_token.token_server
        assert server is not None
        tokens_since = server.request_count
        result = copy(client, source_repo, "v1", client, target_repo)
        assert result.digest == pushed.image
        assert result.blobs_mounted == 3 and result.blobs_copied == 0
        assert result.bytes_copied == 0
        assert client.stats.bytes_uploaded == uploaded
        assert client.resolve(target_repo, "v1").digest == pushed.image
    log = registry_token.access_log()[since:]
    uploads = [
        r
        for r in log
        if r.method in ("PATCH", "PUT") and f"/v2/{target_repo}/blobs/uploads" in r.path
    ]
    assert not uploads, uploads
    mounts = [r for r in log if r.method == "POST" and "mount=" in r.query and r.status == 201]
    assert len(mounts) == 3
    # one token carried push on the target and pull on the source (scopes merged)
    granted = [
        {(g.name, a) for g in r.granted for a in g.actions} for r in server.requests[tokens_since:]
    ]
    assert any({(target_repo, "push"), (source_repo, "pull")} <= scopes for scopes in granted), (
        granted
    )
