"""Release manifest v1 (schema ``alga.appliance.release/v1``, DESIGN.md §3).

The contract between CI and every appliance in the field. Public API:

``read_manifest(data, *, what="release manifest") -> ReleaseManifest``
    The tolerant reader: strict JSON (``ocicore.jsonutil.load_json_strict``), then
    the v1 model with the compatibility defaults. Accepts exactly what
    ``schema/release-manifest.v1.json`` describes. Raises ``ManifestError``.
``write_manifest(manifest, *, bundle_helmreleases=None) -> bytes``
    Strict checks (``ReleaseManifest.validate_for_publish``), then canonical JSON
    (sorted keys, UTF-8, no insignificant whitespace). Raises ``ManifestError``.
``ReleaseManifest`` and its parts (``ImageTags``, ``ConfigBundleRef``, ``Locks``,
``ChartLock``, ``SourceRef``, ``Requirements``)
    Frozen pydantic models; Python attribute names are snake_case, document keys
    camelCase. Unknown keys are kept (``model_extra``) and written back.
``validate_document(document)`` / ``manifest_document(manifest)``
    The reader for an already parsed JSON object; a manifest as a JSON object.
``release_manifest_json_schema()`` / ``release_manifest_schema_text()``
    The published JSON Schema, generated from the models.
``SCHEMA_ID``, ``SCHEMA_URI`` (the schema's ``$id``), ``ARTIFACT_TYPE``, ``CONFIG_MEDIA_TYPE``
    Constants of the format.
``ManifestError``
    ``InvalidInputError`` with a one-line ``<what>: <field path>: <rule>`` message
    and every problem in ``problems``.
"""

from consumer.manifest._codec import (
    manifest_document,
    read_manifest,
    validate_document,
    write_manifest,
)
from consumer.manifest._errors import ManifestError
from consumer.manifest._models import (
    DEFAULT_VALUES_PROFILE,
    SCHEMA_ID,
    ChartLock,
    ConfigBundleRef,
    ImageTags,
    Locks,
    ReleaseManifest,
    Requirements,
    SourceRef,
)
from consumer.manifest._schema import (
    SCHEMA_URI,
    release_manifest_json_schema,
    release_manifest_schema_text,
)

#: ``artifactType`` of the release-manifest OCI artifact (DESIGN.md §2).
ARTIFACT_TYPE = "application/vnd.alga.appliance.release.v1"
#: Media type of its config blob, which is the manifest document itself.
CONFIG_MEDIA_TYPE = "application/vnd.alga.appliance.release.config.v1+json"

__all__ = [
    "ARTIFACT_TYPE",
    "CONFIG_MEDIA_TYPE",
    "DEFAULT_VALUES_PROFILE",
    "SCHEMA_ID",
    "SCHEMA_URI",
    "ChartLock",
    "ConfigBundleRef",
    "ImageTags",
    "Locks",
    "ManifestError",
    "ReleaseManifest",
    "Requirements",
    "SourceRef",
    "manifest_document",
    "read_manifest",
    "release_manifest_json_schema",
    "release_manifest_schema_text",
    "validate_document",
    "write_manifest",
]
