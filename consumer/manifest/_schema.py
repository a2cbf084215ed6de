"""JSON Schema 2020-12 of release manifest v1, generated from the models.

The schema describes the tolerant reader: a document is valid exactly when
``read_manifest`` accepts it, with two exceptions a schema cannot express: it
sees JSON after parsing (so duplicate keys, encoding and the 4 MiB cap are
outside it), and it checks the PEM block of a receipt key but not that the
block decodes to a public key.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from consumer.manifest._models import SCHEMA_ID, ReleaseManifest

#: ``$id`` of the published schema.
SCHEMA_URI = "urn:alga:appliance:release-manifest:v1"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_TITLE = f"Release manifest ({SCHEMA_ID})"
_DESCRIPTION = (
    "The release manifest of an Alga appliance: one release, every artifact pinned by digest. "
    "Published as the config blob (and only layer) of an OCI artifact of type "
    "application/vnd.alga.appliance.release.v1. Readers ignore unknown keys; optional fields "
    "are left out rather than set to null. Documents over 4 MiB, not UTF-8, or with duplicate "
    "keys are refused before this schema applies. Patterns end in $(?!\\n) so that engines "
    "whose $ also matches before a final newline behave like ECMA-262; read it as \\z in "
    "engines without look-ahead."
)


class _ManifestSchemaGenerator(GenerateJsonSchema):
    """pydantic's generator, adjusted so that the schema accepts what the reader accepts."""

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation") -> JsonSchemaValue:
        body = super().generate(schema, mode)
        body.pop("title", None)
        body.pop("description", None)
        return {
            "$schema": _DIALECT,
            "$id": SCHEMA_URI,
            "title": _TITLE,
            "description": _DESCRIPTION,
            **body,
        }

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        # Optional fields may be absent but never null in a document.
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if json_schema.get("default", 0) is None:
            del json_schema["default"]
        return json_schema

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        # pydantic writes key patterns as patternProperties, which lets keys that do not
        # match through; the reader refuses them, so use propertyNames.
        json_schema: JsonSchemaValue = {"type": "object"}
        if "keys_schema" in schema:
            keys = dict(self.generate_inner(schema["keys_schema"]))
            keys.pop("type", None)
            if keys:
                json_schema["propertyNames"] = keys
        if "values_schema" in schema:
            json_schema["additionalProperties"] = self.generate_inner(schema["values_schema"])
        if "min_length" in schema:
            json_schema["minProperties"] = schema["min_length"]
        if "max_length" in schema:
            json_schema["maxProperties"] = schema["max_length"]
        return json_schema

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _plain_descriptions(node: Any) -> Any:
    # Docstrings are written for Python readers: reST literals, wrapped lines.
    if isinstance(node, dict):
        return {
            key: (
                re.sub(r"\s+", " ", value.replace("``", "`")).strip()
                if key == "description" and isinstance(value, str)
                else _plain_descriptions(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_plain_descriptions(item) for item in node]
    return node


def release_manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of release manifest v1 as a dict."""
    schema = ReleaseManifest.model_json_schema(
        by_alias=True, schema_generator=_ManifestSchemaGenerator, mode="validation"
    )
    result: dict[str, Any] = _plain_descriptions(schema)
    return result


def release_manifest_schema_text() -> str:
    """The checked-in form of the schema: two-space indented JSON and a final newline."""
    return json.dumps(release_manifest_json_schema(), indent=2, ensure_ascii=False) + "\n"
