"""Publishing releases of this repository's appliance in tests.

Application images are built by their own pipelines in real life; tests push small
stand-ins (real OCI artifacts in the real registry) under the repositories and tags
``release.toml`` names. The control-plane builder used here pushes a one-layer
artifact unless a test wants the real daemonless build.
"""

from __future__ import annotations

from pathlib import Path

from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.models import OCI_MANIFEST
from publisher.publish import PublishReport, PublishRequest, publish
from publisher.release_config import ReleaseConfig, load_release_config
from publisher.signing import Signer
from tests.support.artifacts import make_manifest, push_artifact

ROOT = Path(__file__).resolve().parents[2]


def repo_config() -> ReleaseConfig:
    return load_release_config(ROOT / "release.toml")


def push_app_images(client: RegistryClient, config: ReleaseConfig, version: str) -> None:
    for key in sorted(config.images):
        image = config.image(key)
        tag = image.tag or version
        push_artifact(client, image.repository, tag, [f"{key}:{tag}".encode()])


def tiny_control_plane(client: RegistryClient | None, repository: str, tag: str) -> Digest:
    layers = [f"control-plane {tag}".encode()]
    manifest = make_manifest(layers)
    if client is not None:
        push_artifact(client, repository, tag, layers)
    return Digest.of(manifest.to_json())


def publish_version(
    client: RegistryClient,
    config: ReleaseConfig,
    version: str,
    signer: Signer,
    *,
    epoch: int = 1_700_000_000,
    lint: bool = False,
    dry_run: bool = False,
    root: Path = ROOT,
) -> PublishReport:
    push_app_images(client, config, version)
    request = PublishRequest(
        config=config,
        root=root,
        registry=client.registry,
        version=version,
        source_repository="https://example.invalid/alga/appliance",
        source_revision=f"{version}@sha1:{'0' * 40}",
        signer=signer,
        build_control_plane=tiny_control_plane,
        plain_http=True,
        epoch=epoch,
        lint=lint,
    )
    return publish(client, request, dry_run=dry_run)


__all__ = [
    "OCI_MANIFEST",
    "publish_version",
    "push_app_images",
    "repo_config",
    "tiny_control_plane",
]
