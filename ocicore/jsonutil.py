"""Strict JSON in, canonical JSON out.

Readers of untrusted documents (manifests, config blobs, release manifests) use
``load_json_strict``: it refuses oversize input before parsing, invalid UTF-8,
duplicate object keys, NaN/Infinity and trailing garbage, each with a one-line
message naming the document. Writers use ``canonical_json``: sorted keys, UTF-8,
no insignificant whitespace, so the same content always gives the same digest.
"""

from __future__ import annotations

import json
from typing import Any

from ocicore.errors import InvalidInputError, SizeLimitError

#: The cap on manifests and config blobs that we parse (DESIGN.md §3).
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


class JSONDocumentError(InvalidInputError):
    """A JSON document is malformed (syntax, encoding, duplicate keys)."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JSONDocumentError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise JSONDocumentError(f"{name} is not valid JSON")


def load_json_strict(data: bytes, *, what: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse ``data`` as one strict JSON document.

    Raises ``SizeLimitError`` when ``data`` exceeds ``max_bytes`` (checked before
    parsing) and ``JSONDocumentError`` for invalid UTF-8, syntax errors, duplicate
    keys and NaN/Infinity. ``what`` names the document in messages.
    """
    if len(data) > max_bytes:
        raise SizeLimitError(
            f"{what} is {len(data)} bytes, over the {max_bytes}-byte limit for JSON documents",
            hint="refusing to parse it; check that the reference points at the intended artifact",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONDocumentError(
            f"{what} is not valid UTF-8 (byte {exc.start})",
            hint="JSON documents must be UTF-8 encoded",
        ) from None
    if text.startswith("\ufeff"):
        raise JSONDocumentError(f"{what} starts with a byte-order mark", hint="remove the BOM")
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except JSONDocumentError as exc:
        raise JSONDocumentError(f"{what}: {exc.message}", hint="fix the document") from None
    except json.JSONDecodeError as exc:
        raise JSONDocumentError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            hint="fix the document's syntax",
        ) from None


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` canonically: sorted keys, UTF-8, no insignificant whitespace."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
