"""Reading and writing release manifest documents (bytes)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from consumer.manifest._errors import ManifestError, describe
from consumer.manifest._grammar import json_type
from consumer.manifest._models import DOCUMENT_CONTEXT, SCHEMA_ID, ReleaseManifest
from ocicore.errors import InvalidInputError, SizeLimitError
from ocicore.jsonutil import canonical_json, load_json_strict

_JSON_VALUES_HINT = (
    "unknown fields must hold plain JSON values (str, int, bool, None, list, dict; no NaN)"
)
_SCHEMA_HINT = f"it must follow {SCHEMA_ID}, described in schema/release-manifest.v1.json"


def read_manifest(data: bytes, *, what: str = "release manifest") -> ReleaseManifest:
    """Parse and validate a release manifest with the tolerant v1 reader.

    The compatibility rules of DESIGN.md §3 apply: a missing ``schema`` means v1,
    ``config.tag`` defaults to ``config.version`` and then to ``version``,
    ``valuesProfile`` to ``single-node``; unknown keys are kept.

    Raises ``ManifestError`` with a one-line message ``<what>: <field>: <rule>`` for
    the first problem (all are in ``problems``). Documents over 4 MiB, not UTF-8,
    with duplicate keys or not JSON are refused before validation, also as
    ``ManifestError`` (the ``ocicore`` error is its ``__cause__``).
    """
    try:
        document = load_json_strict(data, what=what)
    except (SizeLimitError, InvalidInputError) as exc:
        raise ManifestError(exc.message, hint=exc.hint, problems=(exc.message,)) from exc
    if not isinstance(document, dict):
        problem = f"must be a JSON object, not {json_type(document)}"
        raise ManifestError(f"{what}: {problem}", hint=_SCHEMA_HINT, problems=(problem,))
    return validate_document(document, what=what)


def validate_document(
    document: dict[str, Any], *, what: str = "release manifest"
) -> ReleaseManifest:
    """Validate an already parsed JSON object as ``read_manifest`` does."""
    try:
        return ReleaseManifest.model_validate(
            document, strict=True, by_alias=True, by_name=False, context=DOCUMENT_CONTEXT
        )
    except ValidationError as exc:
        raise ManifestError.from_problems(
            what, describe(exc.errors(include_url=False)), hint=_SCHEMA_HINT
        ) from None


def manifest_document(manifest: ReleaseManifest) -> dict[str, Any]:
    """``manifest`` as a JSON object: document field names, absent fields left out."""
    document: dict[str, Any] = manifest.model_dump(mode="json", by_alias=True)
    return document


def write_manifest(
    manifest: ReleaseManifest, *, bundle_helmreleases: Iterable[str] | None = None
) -> bytes:
    """The canonical bytes of ``manifest``, after the strict publishing checks.

    Canonical: sorted keys, UTF-8, no insignificant whitespace, so the same release
    always gives the same bytes and digest. ``config.version`` is written equal to
    ``config.tag`` for older readers. The result is read back and compared, so what
    is written is exactly what ``read_manifest`` returns.

    Raises ``ManifestError`` when the manifest is not publishable (see
    ``ReleaseManifest.validate_for_publish``) or does not survive the round trip.
    """
    # Validate what will be written, not the object: model_copy(update=...) can
    # change a frozen model without validation.
    checked = validate_document(manifest_document(manifest))
    checked.validate_for_publish(bundle_helmreleases)
    try:
        data = canonical_json(manifest_document(checked))
    except (TypeError, ValueError) as exc:
        raise ManifestError(
            f"release manifest: cannot be written as JSON: {exc}", hint=_JSON_VALUES_HINT
        ) from None
    if checked != manifest or read_manifest(data) != checked:
        raise ManifestError(
            "release manifest: writing it would change it (the bytes read back differently)",
            hint=_JSON_VALUES_HINT,
        )
    return data
