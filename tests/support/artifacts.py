"""Small OCI artifacts for tests, pushed with our client."""

from __future__ import annotations

from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.models import EMPTY_JSON, OCI_EMPTY_CONFIG, OCI_MANIFEST, Descriptor, Manifest

LAYER_TYPE = "application/vnd.alga.test.layer.v1"


def make_manifest(layers: list[bytes], *, titles: list[str] | None = None) -> Manifest:
    descriptors = [
        Descriptor.of(
            LAYER_TYPE,
            data,
            annotations={"org.opencontainers.image.title": titles[i]} if titles else None,
        )
        for i, data in enumerate(layers)
    ]
    return Manifest(
        schema_version=2,
        media_type=OCI_MANIFEST,
        artifact_type="application/vnd.alga.test.v1",
        config=Descriptor.of(OCI_EMPTY_CONFIG, EMPTY_JSON),
        layers=descriptors,
    )


def push_artifact(
    client: RegistryClient,
    repository: str,
    tag: str,
    layers: list[bytes],
    *,
    titles: list[str] | None = None,
) -> tuple[Digest, Manifest]:
    manifest = make_manifest(layers, titles=titles)
    client.push_blob(repository, EMPTY_JSON)
    for data in layers:
        client.push_blob(repository, data)
    digest = client.push_manifest(repository, manifest.to_json(), OCI_MANIFEST, tag=tag)
    return digest, manifest
