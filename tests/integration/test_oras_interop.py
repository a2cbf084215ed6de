"""oras-py, an independent client: it pulls what we push, and we pull what it pushes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ocicore.client import RegistryClient
from ocicore.models import Manifest
from tests.support.artifacts import push_artifact

pytestmark = pytest.mark.integration


def _oras(host: str) -> object:
    import oras.client

    return oras.client.OrasClient(hostname=host, insecure=True)


def test_oras_pulls_what_we_push(registry: object, tmp_path: Path) -> None:
    host = registry.host  # type: ignore[attr-defined]
    payload = os.urandom(70_000)
    with RegistryClient(host, credentials=None) as client:
        push_artifact(client, "interop/ours", "v1", [payload], titles=["payload.bin"])
    out = tmp_path / "out"
    files = _oras(host).pull(target=f"{host}/interop/ours:v1", outdir=str(out))  # type: ignore[attr-defined]
    assert [Path(f).name for f in files] == ["payload.bin"]
    assert (out / "payload.bin").read_bytes() == payload


def test_we_pull_what_oras_pushes(
    registry: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = registry.host  # type: ignore[attr-defined]
    payload = os.urandom(50_000)
    monkeypatch.chdir(tmp_path)
    Path("artifact.bin").write_bytes(payload)
    _oras(host).push(target=f"{host}/interop/theirs:v1", files=["artifact.bin"])  # type: ignore[attr-defined]
    with RegistryClient(host, credentials=None) as client:
        desc = client.resolve("interop/theirs", "v1")
        manifest = client.get_manifest("interop/theirs", desc.digest).parse()
        assert isinstance(manifest, Manifest)
        layer = next(
            d
            for d in manifest.layers
            if (d.annotations or {}).get("org.opencontainers.image.title") == "artifact.bin"
        )
        client.fetch_blob("interop/theirs", layer, tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == payload
