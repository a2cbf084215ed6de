"""The published JSON Schema of release manifest v1 and its README."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from consumer.manifest import (
    SCHEMA_ID,
    SCHEMA_URI,
    release_manifest_json_schema,
    release_manifest_schema_text,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schema" / "release-manifest.v1.json"
README = ROOT / "schema" / "README.md"
GENERATOR = ROOT / "scripts" / "generate_schema.py"


def test_checked_in_schema_matches_the_models() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == release_manifest_schema_text(), (
        "schema/release-manifest.v1.json is out of date; run scripts/generate_schema.py"
    )


def test_generator_script_checks_and_writes(tmp_path: Path) -> None:
    check = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    target = tmp_path / "schema.json"
    subprocess.run([sys.executable, str(GENERATOR), "--output", str(target)], check=True)
    assert target.read_text(encoding="utf-8") == release_manifest_schema_text()
    target.write_text("{}", encoding="utf-8")
    stale = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--output", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert stale.returncode == 1
    assert "out of date" in stale.stderr


def test_schema_is_a_valid_2020_12_schema_with_identity() -> None:
    schema = release_manifest_json_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_URI
    assert SCHEMA_ID in schema["title"]
    assert schema["description"]
    assert schema["properties"]["schema"]["const"] == SCHEMA_ID
    assert schema["required"] == ["version", "images", "config"]


def _properties(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named property, as (dotted path, its schema), through $ref."""
    definitions = schema["$defs"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if ref is None:
            return node
        return resolve(definitions[ref.rsplit("/", 1)[1]])

    def walk(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, child in node.get("properties", {}).items():
            path = f"{prefix}{name}"
            yield path, child
            yield from walk(resolve(child), f"{path}.")
            values = resolve(child).get("additionalProperties")
            if isinstance(values, dict):
                yield from walk(resolve(values), f"{path}.<name>.")

    yield from walk(schema, "")


def test_every_property_has_a_description_and_no_null() -> None:
    schema = release_manifest_json_schema()
    for path, child in _properties(schema):
        assert child.get("description"), f"{path} has no description"
        assert '"null"' not in json.dumps(child), f"{path} admits null"
        assert "\n" not in child["description"]
        assert "``" not in child["description"]


def test_every_string_pattern_is_anchored_against_a_final_newline() -> None:
    text = SCHEMA_FILE.read_text(encoding="utf-8")

    def patterns(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "pattern":
                    yield value
                else:
                    yield from patterns(value)

    found = list(patterns(json.loads(text)))
    assert found
    for pattern in found:
        assert pattern.startswith("^(?:") and pattern.endswith(")$(?!\\n)"), pattern
        assert "\\d" not in pattern and "\\w" not in pattern, pattern


def test_readme_lists_every_field() -> None:
    readme = README.read_text(encoding="utf-8")
    assert SCHEMA_URI in readme
    for path, _ in _properties(release_manifest_json_schema()):
        assert f"`{path}`" in readme, f"schema/README.md does not explain {path}"
