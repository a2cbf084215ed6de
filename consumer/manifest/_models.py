"""Pydantic models of release manifest v1 (DESIGN.md §3).

The models are the tolerant reader: they accept exactly what
``schema/release-manifest.v1.json`` (generated from them) describes, apply the
compatibility defaults, and keep unknown keys so that a round trip loses nothing.
The stricter rules for what we publish live in ``_publish``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from consumer.manifest._errors import ManifestError
from consumer.manifest._grammar import (
    ChartName,
    ChartReference,
    ChartVersion,
    ControlPlaneReference,
    Digest,
    KeyId,
    NonBlank,
    PemPublicKey,
    PinnedReference,
    ProfileName,
    ProfileValuesFile,
    Repository,
    Sequence,
    Tag,
    UtcTimestamp,
)
from consumer.manifest._publish import publish_problems

#: The value of ``schema`` in every v1 release manifest.
SCHEMA_ID: Final = "alga.appliance.release/v1"
#: ``valuesProfile`` when a manifest does not name one.
DEFAULT_VALUES_PROFILE = "single-node"

#: Validation context set by the document reader: explicit ``null`` is refused.
DOCUMENT_CONTEXT: dict[str, Any] = {"document": True}


class _Part(BaseModel):
    """Common behaviour: strict JSON types, immutable, unknown keys kept.

    An optional field is either present with a value of its type or absent; in
    a document, ``null`` is refused (Python callers may pass ``None`` for absent).
    Absent optional fields are left out when serialising; unknown keys are
    written back as they were read.
    """

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        frozen=True,
        validate_by_alias=True,
        validate_by_name=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_null(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and info.context and info.context.get("document"):
            for name, field in cls.model_fields.items():
                key = field.alias or name
                if key in data and data[key] is None:
                    raise PydanticCustomError(
                        "null_field",
                        "must not be null (leave an optional field out instead)",
                        {"key": key},
                    )
        return data

    @model_serializer(mode="wrap")
    def _omit_absent(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name, field in type(self).model_fields.items():
            if getattr(self, name) is None:
                data.pop(field.alias if info.by_alias and field.alias else name, None)
        return data


class ImageTags(_Part):
    """Bare image tags (no repository, no digest) of the appliance's workloads, by image key.

    ``algaCore`` is required; other keys are optional, and keys beyond the four named
    here are accepted if their value is a tag too. The digest of each image is in
    ``locks.images``.
    """

    __pydantic_extra__: dict[str, Tag] = Field(init=False)

    alga_core: Tag = Field(alias="algaCore", description="Tag of the core application image.")
    workflow_worker: Tag | None = Field(
        default=None, alias="workflowWorker", description="Tag of the workflow worker image."
    )
    email_service: Tag | None = Field(
        default=None, alias="emailService", description="Tag of the email service image."
    )
    temporal_worker: Tag | None = Field(
        default=None, alias="temporalWorker", description="Tag of the Temporal worker image."
    )

    def by_key(self) -> dict[str, str]:
        """Every image key (document spelling) with its tag, unknown keys included."""
        tags: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is not None:
                tags[field.alias or name] = value
        tags.update(self.__pydantic_extra__ or {})
        return tags


class ConfigBundleRef(_Part):
    """The Flux config bundle of the release.

    The reader fills in ``tag`` from ``config.version`` (the older spelling) or, failing
    that, from the manifest's ``version``; and ``version`` from ``tag``. When both are
    present and differ, ``tag`` wins (publishing refuses such a manifest).
    """

    repository: Repository = Field(
        description="Repository of the bundle, e.g. registry.example.com/alga/appliance-config."
    )
    digest: Digest = Field(description="Manifest digest of the bundle; this is what is pulled.")
    tag: NonBlank | None = Field(
        default=None, description="Tag of the bundle. Default: config.version, else version."
    )
    version: NonBlank | None = Field(
        default=None,
        description="Older spelling of config.tag, still written (equal to tag) for older readers.",
    )


class ChartLock(_Part):
    """Where a chart was published and the digest of its OCI manifest."""

    ref: ChartReference = Field(
        description="oci://<repository>/<chart>:<version>, with '+' in the version written '_'."
    )
    digest: Digest = Field(description="Manifest digest of the chart.")


class Locks(_Part):
    """The digest of every artifact the release references (all required when publishing)."""

    images: dict[str, PinnedReference] | None = Field(
        default=None, description="repository@sha256:… for each key of images."
    )
    charts: dict[ChartName, ChartLock] | None = Field(
        default=None, description="Reference and digest for each entry of charts."
    )
    control_plane: Digest | None = Field(
        default=None, alias="controlPlane", description="Manifest digest of the control plane."
    )
    config: Digest | None = Field(
        default=None, description="Manifest digest of the config bundle (= config.digest)."
    )


class SourceRef(_Part):
    """The code the release was built from."""

    repository: NonBlank = Field(description="Source repository (URL or name).")
    revision: NonBlank = Field(description="Revision (commit) in that repository.")


class Requirements(_Part):
    """Conditions on the appliance that installs this release."""

    min_version: NonBlank = Field(
        alias="minVersion",
        description="Version the appliance must already run to upgrade to this release.",
    )


ReceiptKeys = Annotated[dict[KeyId, PemPublicKey], Field(min_length=1, max_length=2)]


class ReleaseManifest(_Part):
    """Release manifest v1: one release of the appliance, every artifact pinned by digest.

    Readers ignore keys they do not know; writers add fields only additively.
    ``schema`` may be left out (it then means v1).
    """

    schema_id: Literal["alga.appliance.release/v1"] = Field(
        default=SCHEMA_ID,
        alias="schema",
        description=f"Schema identifier; when present it must be {SCHEMA_ID}.",
    )
    version: NonBlank = Field(description="Version of the release; its release-manifest tag.")
    images: ImageTags = Field(description="Image tags by image key.")
    config: ConfigBundleRef = Field(description="The Flux config bundle.")
    values_profile: ProfileName = Field(
        default=DEFAULT_VALUES_PROFILE,
        alias="valuesProfile",
        description="Values profile the appliance installs with.",
    )
    control_plane: ControlPlaneReference | None = Field(
        default=None,
        alias="controlPlane",
        description="Control-plane image as repository@sha256:…; older manifests may carry "
        "repository:tag or a bare tag. Required (digest-pinned) when publishing.",
    )
    charts: dict[ChartName, ChartVersion] | None = Field(
        default=None, description="Chart versions by chart name."
    )
    profile_values: dict[ProfileValuesFile, str] | None = Field(
        default=None,
        alias="profileValues",
        description="Values files by name '<release>.<profile>.yaml': YAML text, one per "
        "HelmRelease of the bundle.",
    )
    support_agent: PinnedReference | None = Field(
        default=None, alias="supportAgent", description="Support agent image, repository@sha256:…."
    )
    support_receipt_keys: ReceiptKeys | None = Field(
        default=None,
        alias="supportReceiptKeys",
        description="One or two PEM public keys (SubjectPublicKeyInfo) by key id. The schema "
        "checks the PEM block; readers must also check that it decodes to a public key.",
    )
    channel: Tag | None = Field(
        default=None, description="Channel the release was first published to (informational)."
    )
    created: UtcTimestamp | None = Field(
        default=None, description="Creation time, RFC 3339 in UTC ('Z')."
    )
    sequence: Sequence | None = Field(
        default=None,
        description="Strictly increasing across the releases of one release repository.",
    )
    source: SourceRef | None = Field(default=None, description="The code it was built from.")
    locks: Locks | None = Field(default=None, description="Digest of every referenced artifact.")
    requires: Requirements | None = Field(
        default=None, description="Conditions on the appliance that upgrades to this release."
    )

    @field_validator("config", mode="after")
    @classmethod
    def _default_config_tag(cls, config: ConfigBundleRef, info: ValidationInfo) -> ConfigBundleRef:
        tag = config.tag or config.version or info.data.get("version")
        if tag is None:
            return config
        update = {}
        if config.tag is None:
            update["tag"] = tag
        if config.version is None:
            update["version"] = tag
        return config.model_copy(update=update) if update else config

    @property
    def config_tag(self) -> str:
        """The config bundle's tag after the compatibility defaults (never empty)."""
        return self.config.tag or self.config.version or self.version

    @property
    def created_at(self) -> datetime | None:
        """``created`` as an aware UTC datetime (fractions beyond microseconds dropped)."""
        if self.created is None:
            return None
        whole, _, fraction = self.created.rstrip("Z").partition(".")
        moment = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        return moment.replace(microsecond=int((fraction + "000000")[:6]))

    @property
    def control_plane_digest(self) -> str | None:
        """The digest part of ``controlPlane`` when it is digest-pinned, else ``None``."""
        if self.control_plane is None or "@" not in self.control_plane:
            return None
        return self.control_plane.rpartition("@")[2]

    def validate_for_publish(self, bundle_helmreleases: Iterable[str] | None = None) -> None:
        """Apply the strict rules for what we publish (DESIGN.md §3).

        Every lock present and consistent with what it locks; ``controlPlane`` and
        ``supportAgent`` digest-pinned; ``version`` and ``config.tag`` valid OCI tags,
        ``config.version`` equal to ``config.tag``; ``created``, ``sequence`` and
        ``charts`` present; each ``profileValues`` entry of profile ``valuesProfile``
        and a YAML mapping; and, when ``bundle_helmreleases`` (the HelmRelease names
        in the config bundle) is given, exactly one values file per HelmRelease.

        Raises ``ManifestError`` naming the first problem; ``problems`` lists all.
        """
        problems = publish_problems(self, bundle_helmreleases)
        if problems:
            raise ManifestError.from_problems(
                "release manifest is not publishable",
                problems,
                hint="fix the release definition or what was pushed; every lock must "
                "name the digest of the artifact it pins",
            )
