"""OCI wire models: descriptors, image manifests and indexes.

Models validate at construction and keep unknown fields (``extra="allow"``) so a
document read and written again loses nothing. Digests are always checked over
the raw bytes received, never over a re-serialised model: use ``parse_manifest``
on bytes whose digest has already been verified.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ocicore.digest import Digest
from ocicore.errors import InvalidInputError
from ocicore.jsonutil import canonical_json, load_json_strict

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
#: The Accept list for manifest requests, most preferred first.
MANIFEST_ACCEPT = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)

#: ``{}``, the OCI empty descriptor's content.
EMPTY_JSON = b"{}"


class ManifestFormatError(InvalidInputError):
    """A manifest or index is not a valid OCI/Docker v2 document."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Canonical JSON of this document (what we push)."""
        return canonical_json(self.model_dump(mode="json", by_alias=True, exclude_none=True))


class Platform(_Wire):
    architecture: str
    os: str
    os_version: str | None = Field(default=None, alias="os.version")
    variant: str | None = None


class Descriptor(_Wire):
    media_type: str = Field(alias="mediaType", min_length=1)
    digest: Digest
    size: Annotated[int, Field(ge=0)]
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: str | None = Field(default=None, alias="artifactType")

    @classmethod
    def of(
        cls,
        media_type: str,
        data: bytes,
        *,
        annotations: dict[str, str] | None = None,
        artifact_type: str | None = None,
    ) -> Descriptor:
        """The descriptor of ``data``."""
        return cls(
            media_type=media_type,
            digest=Digest.of(data),
            size=len(data),
            annotations=annotations,
            artifact_type=artifact_type,
        )


class Manifest(_Wire):
    schema_version: Literal[2] = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    artifact_type: str | None = Field(default=None, alias="artifactType")
    config: Descriptor
    layers: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None

    def blobs(self) -> list[Descriptor]:
        """Config and layers: every blob this manifest references."""
        return [self.config, *self.layers]


class Index(_Wire):
    schema_version: Literal[2] = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    artifact_type: str | None = Field(default=None, alias="artifactType")
    manifests: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


def media_type_of(data: bytes, declared: str | None) -> str:
    """The media type of a manifest document: the declared one, else its ``mediaType``."""
    if declared and declared.split(";")[0].strip() in (*MANIFEST_MEDIA_TYPES, *INDEX_MEDIA_TYPES):
        return declared.split(";")[0].strip()
    doc = load_json_strict(data, what="manifest")
    if isinstance(doc, dict):
        if isinstance(doc.get("mediaType"), str):
            return str(doc["mediaType"])
        if "manifests" in doc:
            return OCI_INDEX
    return OCI_MANIFEST


def parse_manifest(data: bytes, *, what: str = "manifest") -> Manifest | Index:
    """Parse verified manifest bytes into a ``Manifest`` or ``Index``.

    Raises ``ManifestFormatError`` (or the ``jsonutil`` errors) when it is neither.
    """
    doc: Any = load_json_strict(data, what=what)
    if not isinstance(doc, dict):
        raise ManifestFormatError(f"{what} is not a JSON object")
    media_type = doc.get("mediaType")
    is_index = media_type in INDEX_MEDIA_TYPES or (media_type is None and "manifests" in doc)
    model: type[Manifest] | type[Index] = Index if is_index else Manifest
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(document)"
        raise ManifestFormatError(
            f"{what} is not a valid OCI {'index' if is_index else 'manifest'}: "
            f"{loc}: {err['msg']}",
            hint="the reference may point at something that is not an OCI artifact",
        ) from None
