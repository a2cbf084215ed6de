"""Reader and schema agree beyond the corpus: systematic mutations of valid documents.

Every key of a few seed documents is deleted, replaced by values of every JSON
type and by near-misses of each grammar (trailing newline, leading space, upper
case, one character short), and joined by an unknown key. For every mutant the
pydantic reader and ``jsonschema`` with the checked-in schema must agree, except
for the one documented gap: a well-formed PEM block whose content is not a public
key (upper-casing a key's base64 produces one), which only the reader can refuse.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from consumer.manifest import ManifestError, read_manifest

CORPUS = Path(__file__).resolve().parents[1] / "data" / "manifests" / "valid"
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema" / "release-manifest.v1.json"
KEY_MATERIAL_RULE = "is a PEM block, but its content is not a public key"
SEEDS = [
    "minimal.json",
    "design-doc.json",
    "full-current.json",
    "extended.json",
    "unknown-nested-keys.json",
]
DIGEST = "sha256:" + "0123456789abcdef" * 4
REPLACEMENTS: list[Any] = [
    None,
    True,
    0,
    -1,
    7.0,
    2.5,
    2**53,
    "",
    " ",
    "x",
    "1.0.0",
    "v1.0",
    "Upper",
    "a b",
    "sha256:abc",
    DIGEST,
    "registry.example.com/alga/x@" + DIGEST,
    "registry.example.com/alga/x:1.0",
    "oci://registry.example.com/alga/charts/x:1.0.0",
    "2024-02-29T00:00:00Z",
    "x" * 129,
    [],
    ["1.0.0"],
    {},
    {"k": "v"},
]


def _string_near_misses(value: str) -> list[str]:
    return [value + "\n", " " + value, value + " ", value.upper(), value[:-1], value + "\u00e9"]


Path_ = tuple[str, ...]


def _paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


def _objects(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, dict):
        yield prefix
        for key, value in node.items():
            yield from _objects(value, (*prefix, key))


def _parent(document: Any, path: Path_) -> Any:
    for key in path[:-1]:
        document = document[key]
    return document


def _mutants(seed: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for path in _paths(seed):
        label = ".".join(path)
        removed = copy.deepcopy(seed)
        del _parent(removed, path)[path[-1]]
        yield f"delete {label}", removed
        original = _parent(seed, path)[path[-1]]
        values = list(REPLACEMENTS)
        if isinstance(original, str):
            values += _string_near_misses(original)
        for value in values:
            changed = copy.deepcopy(seed)
            _parent(changed, path)[path[-1]] = value
            yield f"{label} = {value!r:.40}", changed
        # An unknown key name inside a map or model.
        if isinstance(original, dict):
            for key in ("zz", "Bad Key", "a.b.yaml", "x.single-node.yaml"):
                added = copy.deepcopy(seed)
                _parent(added, path)[path[-1]][key] = next(iter(original.values()), "1.0.0")
                yield f"{label}[{key!r}] added", added
    for path in _objects(seed):
        added = copy.deepcopy(seed)
        target = added
        for key in path:
            target = target[key]
        target["unknownKey"] = {"any": ["json", 1, None]}
        yield f"unknown key at {'.'.join(path) or '<top>'}", added
    yield "top-level array", [seed]
    yield "top-level string", "manifest"


def _reader_accepts(document: Any) -> tuple[bool, str]:
    try:
        read_manifest(json.dumps(document).encode())
    except ManifestError as exc:
        return False, exc.message
    return True, ""


@pytest.mark.parametrize("seed_name", SEEDS)
def test_reader_and_schema_agree_on_mutants(seed_name: str) -> None:
    validator = Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    seed = json.loads((CORPUS / seed_name).read_bytes())
    disagreements = []
    count = 0
    for label, mutant in _mutants(seed):
        count += 1
        accepted, message = _reader_accepts(mutant)
        schema_errors = [error.message for error in validator.iter_errors(mutant)]
        key_material_gap = (
            label.startswith("supportReceiptKeys.")
            and KEY_MATERIAL_RULE in message
            and not schema_errors
        )
        if accepted == bool(schema_errors) and not key_material_gap:
            disagreements.append(
                f"{label}: reader {'accepts' if accepted else 'refuses: ' + message}; "
                f"schema {schema_errors[:1] if schema_errors else 'accepts'}"
            )
    assert count > 150
    assert disagreements == [], "\n".join(disagreements[:20])
