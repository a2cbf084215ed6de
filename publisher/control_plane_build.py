"""The publish step that builds and pushes the control-plane image
(``control_plane/build.toml`` through the daemonless builder)."""

from __future__ import annotations

from pathlib import Path

from ocicore.client import RegistryClient
from ocicore.digest import Digest
from publisher.image_build import build_image, push_image
from publisher.image_spec import load_build_spec
from publisher.publish import ControlPlaneBuilder
from publisher.release_config import ReleaseConfig


def control_plane_builder(root: Path, config: ReleaseConfig, *, version: str, revision: str,
                          epoch: int, source: str | None = None) -> ControlPlaneBuilder:
    """A ``ControlPlaneBuilder`` for ``publish``: builds from ``[control_plane].build`` and
    pushes under ``repository:tag`` (nothing is pushed in a dry run)."""
    spec = load_build_spec(root / config.control_plane.build)

    def build(client: RegistryClient | None, repository: str, tag: str) -> Digest:
        built = build_image(spec, source_root=root, version=version, revision=revision,
                            source=source or "unknown", epoch=epoch)
        if client is not None:
            push_image(built, client, repository, tag)
        return built.digest

    return build
