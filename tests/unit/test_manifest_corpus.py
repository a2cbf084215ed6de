"""The release-manifest compatibility corpus: tests/data/manifests/.

``valid/*.json`` must be read; each ``invalid/*.json`` must be refused with the
message fragment recorded in ``invalid/expected.toml``. And the reader and the
published JSON Schema must give every document the same verdict, with the
exceptions a schema cannot express, which ``expected.toml`` names by ``stage``:

* ``parse``: not parseable JSON (invalid UTF-8, duplicate keys, trailing comma,
  byte-order mark, NaN, oversize). ``load_json_strict`` refuses these before any
  schema applies, so there is no schema verdict to compare. Duplicate keys are
  the subtle case: a schema validator, after a lenient parser, would see only the
  last value; the equality between reader and schema holds for parseable documents.
* ``key-material``: a well-formed PEM block whose content is not a public key.
  The schema checks the block; only a reader that loads the key can refuse it.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from consumer.manifest import ManifestError, ReleaseManifest, read_manifest
from ocicore.errors import ToolkitError
from ocicore.jsonutil import MAX_DOCUMENT_BYTES, load_json_strict

CORPUS = Path(__file__).resolve().parents[1] / "data" / "manifests"
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema" / "release-manifest.v1.json"
VALID = sorted((CORPUS / "valid").glob("*.json"))
EXPECTED: dict[str, dict[str, str]] = tomllib.loads(
    (CORPUS / "invalid" / "expected.toml").read_text(encoding="utf-8")
)
INVALID = sorted((CORPUS / "invalid").glob("*.json"))
STAGES = {"schema", "parse", "key-material"}


def _oversize_document() -> bytes:
    """A manifest that is valid but for its size: 5 MiB of an unknown key."""
    minimal = json.loads((CORPUS / "valid" / "minimal.json").read_bytes())
    minimal["padding"] = "x" * (5 * 1024 * 1024)
    return json.dumps(minimal).encode()


#: Invalid documents too large to check in, made at run time: name -> (bytes, fragment).
GENERATED = {
    "oversize-5mib": (
        _oversize_document,
        f"over the {MAX_DOCUMENT_BYTES}-byte limit for JSON documents",
    ),
}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def test_corpus_is_large_enough() -> None:
    assert len(VALID) >= 15
    assert len(INVALID) + len(GENERATED) >= 30


def test_every_invalid_document_has_an_expectation_and_back() -> None:
    assert {path.name for path in INVALID} == set(EXPECTED)
    for name, expectation in EXPECTED.items():
        assert set(expectation) == {"message", "stage"}, name
        assert expectation["stage"] in STAGES, name


def test_corpus_contains_the_required_shapes() -> None:
    def load(name: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((CORPUS / "valid" / name).read_bytes())
        return document

    minimal = load("minimal.json")
    assert minimal.keys() == {"version", "images", "config"}
    assert minimal["images"].keys() == {"algaCore"}
    assert minimal["config"].keys() == {"repository", "digest"}

    design = load("design-doc.json")
    assert "version" in design["config"] and "tag" not in design["config"]
    assert "@" not in design["controlPlane"]

    full = load("full-current.json")
    assert {"profileValues", "supportAgent", "supportReceiptKeys"} <= full.keys()
    assert len(full["supportReceiptKeys"]) == 2

    extended = load("extended.json")
    assert {"created", "sequence", "source", "locks", "requires", "channel"} <= extended.keys()


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_document_is_read(path: Path, validator: Draft202012Validator) -> None:
    manifest = read_manifest(path.read_bytes())
    assert isinstance(manifest, ReleaseManifest)
    assert manifest.config.tag is not None
    assert manifest.config.version is not None
    errors = [error.message for error in validator.iter_errors(json.loads(path.read_bytes()))]
    assert errors == [], f"the schema refuses a document the reader accepts: {errors}"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_document_is_refused_with_its_message(path: Path) -> None:
    expectation = EXPECTED[path.name]
    with pytest.raises(ManifestError) as caught:
        read_manifest(path.read_bytes())
    error = caught.value
    assert expectation["message"] in error.message
    assert "\n" not in str(error), "the message must be one line"
    assert error.message.startswith("release manifest")
    assert error.problems, "every problem is listed"
    if expectation["stage"] != "parse":
        # Names the field and the rule: "release manifest: <path>: <rule>", or the
        # document itself when its top level is wrong.
        rest = error.message.removeprefix("release manifest: ")
        assert ": " in rest or rest.startswith("must be a JSON object")


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_schema_gives_the_same_verdict(path: Path, validator: Draft202012Validator) -> None:
    stage = EXPECTED[path.name]["stage"]
    if stage == "parse":
        with pytest.raises(ToolkitError):
            load_json_strict(path.read_bytes(), what="release manifest")
        return
    document = load_json_strict(path.read_bytes(), what="release manifest")
    if stage == "schema":
        assert not validator.is_valid(document), "the schema accepts a document the reader refuses"
    else:  # key-material: documented limit of what a schema can check
        assert validator.is_valid(document)


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_invalid_document_is_refused(name: str) -> None:
    make, fragment = GENERATED[name]
    data = make()
    with pytest.raises(ManifestError) as caught:
        read_manifest(data)
    assert fragment in caught.value.message
    assert "\n" not in str(caught.value)


def test_what_names_the_document() -> None:
    data = (CORPUS / "invalid" / "missing-images-alga-core.json").read_bytes()
    with pytest.raises(ManifestError, match=r"^release 1\.4\.0 from stable: images\.algaCore"):
        read_manifest(data, what="release 1.4.0 from stable")


def test_parse_errors_keep_the_ocicore_cause() -> None:
    with pytest.raises(ManifestError) as caught:
        read_manifest((CORPUS / "invalid" / "duplicate-keys.json").read_bytes())
    assert isinstance(caught.value.__cause__, ToolkitError)
    assert caught.value.exit_code == 2


def test_compatibility_defaults() -> None:
    minimal = read_manifest((CORPUS / "valid" / "minimal.json").read_bytes())
    assert minimal.schema_id == "alga.appliance.release/v1"
    assert minimal.values_profile == "single-node"
    assert minimal.config.tag == minimal.config.version == minimal.version == "1.0.0"
    assert minimal.config_tag == "1.0.0"

    design = read_manifest((CORPUS / "valid" / "design-doc.json").read_bytes())
    assert design.config.tag == "1.0.0"
    assert design.control_plane_digest is None

    differ = read_manifest((CORPUS / "valid" / "config-tag-and-version-differ.json").read_bytes())
    assert differ.config_tag == "1.0.1", "config.tag wins over the older config.version"
    assert differ.config.version == "1.0.0"


def test_unknown_keys_are_kept() -> None:
    manifest = read_manifest((CORPUS / "valid" / "unknown-top-level-keys.json").read_bytes())
    assert manifest.model_extra == {
        "x-notes": "added by a later writer",
        "futureField": {"nested": [1, 2.5, None, True, "s"]},
        "nothing": None,
        "count": 3,
    }
    nested = read_manifest((CORPUS / "valid" / "unknown-nested-keys.json").read_bytes())
    assert nested.images.by_key()["reportingService"] == "2.0.1"
    assert nested.config.model_extra == {"mediaType": "application/vnd.cncf.flux.config.v1+json"}
    assert nested.locks is not None
    assert nested.locks.model_extra == {"sbom": {"format": "spdx"}}


def test_integral_float_sequence_is_an_integer() -> None:
    manifest = read_manifest((CORPUS / "valid" / "sequence-integral-float.json").read_bytes())
    assert manifest.sequence == 7
    assert type(manifest.sequence) is int
