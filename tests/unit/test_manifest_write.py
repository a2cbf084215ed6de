"""Writing release manifests: strict publishing rules, canonical bytes, lossless round trips."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from consumer.manifest import (
    ChartLock,
    ConfigBundleRef,
    ImageTags,
    Locks,
    ManifestError,
    ReleaseManifest,
    SourceRef,
    read_manifest,
    write_manifest,
)
from ocicore.jsonutil import canonical_json

CORPUS = Path(__file__).resolve().parents[1] / "data" / "manifests" / "valid"
EXTENDED_BYTES = (CORPUS / "extended.json").read_bytes()
RELEASES = [
    "sebastian",
    "pgbouncer",
    "temporal",
    "temporal-worker",
    "workflow-worker",
    "email-service",
]
DIGEST = "sha256:" + "ab" * 32
REG = "registry.example.com/alga"


def _extended() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXTENDED_BYTES)
    return document


def _built_in_python() -> ReleaseManifest:
    """A publishable manifest built with Python names, as the publisher would."""
    return ReleaseManifest(
        version="2.0.0",
        images=ImageTags(alga_core="2.0.0", workflow_worker="2.0.0"),
        config=ConfigBundleRef(repository=f"{REG}/appliance-config", digest=DIGEST, tag="2.0.0"),
        control_plane=f"{REG}/appliance-control-plane@{DIGEST}",
        charts={"sebastian": "2.0.0"},
        profile_values={"sebastian.single-node.yaml": "replicaCount: 1\n"},
        channel="stable",
        created="2024-07-01T00:00:00Z",
        sequence=43,
        source=SourceRef(repository="https://git.example.com/alga/appliance.git", revision="abc"),
        locks=Locks(
            images={
                "algaCore": f"{REG}/sebastian@{DIGEST}",
                "workflowWorker": f"{REG}/workflow-worker@{DIGEST}",
            },
            charts={
                "sebastian": ChartLock(ref=f"oci://{REG}/charts/sebastian:2.0.0", digest=DIGEST)
            },
            control_plane=DIGEST,
            config=DIGEST,
        ),
    )


def test_extended_corpus_document_is_our_writer_output_byte_for_byte() -> None:
    manifest = read_manifest(EXTENDED_BYTES)
    assert write_manifest(manifest, bundle_helmreleases=RELEASES) == EXTENDED_BYTES


def test_writing_is_byte_identical_across_runs_and_objects() -> None:
    first = write_manifest(_built_in_python())
    assert write_manifest(_built_in_python()) == first
    assert write_manifest(read_manifest(first)) == first
    # Key order of the input does not matter.
    shuffled = dict(reversed(list(_extended().items())))
    assert write_manifest(read_manifest(json.dumps(shuffled, indent=4).encode())) == EXTENDED_BYTES


def test_write_then_read_is_lossless() -> None:
    built = _built_in_python()
    assert read_manifest(write_manifest(built)) == built
    extended = read_manifest(EXTENDED_BYTES)
    assert read_manifest(write_manifest(extended)) == extended


def test_written_bytes_are_canonical_json() -> None:
    data = write_manifest(_built_in_python())
    assert data == canonical_json(json.loads(data))
    assert not data.endswith(b"\n")
    keys = list(json.loads(data))
    assert keys == sorted(keys)


def test_non_ascii_is_written_as_utf8_not_escaped() -> None:
    document = _extended()
    document["notes"] = "Größe ✓"
    data = write_manifest(read_manifest(json.dumps(document).encode()))
    assert "Größe ✓".encode() in data
    assert b"\\u" not in data


def test_writer_sets_config_version_and_defaults() -> None:
    written = json.loads(write_manifest(_built_in_python()))
    assert written["config"]["version"] == written["config"]["tag"] == "2.0.0"
    assert written["schema"] == "alga.appliance.release/v1"
    assert written["valuesProfile"] == "single-node"
    assert "supportAgent" not in written, "absent optional fields are left out, not null"


def test_unknown_keys_survive_a_round_trip() -> None:
    document = _extended()
    document["futureField"] = {"nested": [1, None, True, "s"], "empty": {}}
    document["nothing"] = None
    document["config"]["mediaType"] = "application/vnd.cncf.flux.config.v1+json"
    document["locks"]["sbom"] = {"digest": DIGEST}
    document["images"]["reportingService"] = "2.0.1"
    document["locks"]["images"]["reportingService"] = f"{REG}/reporting@{DIGEST}"
    data = write_manifest(read_manifest(json.dumps(document).encode()))
    assert json.loads(data) == document
    assert write_manifest(read_manifest(data)) == data


def test_models_are_immutable() -> None:
    manifest = _built_in_python()
    with pytest.raises(ValidationError):
        manifest.version = "3.0.0"  # type: ignore[misc]


def test_writer_revalidates_objects_changed_behind_validation() -> None:
    tampered = _built_in_python().model_copy(update={"version": ""})
    with pytest.raises(ManifestError, match=r"version: must be a non-blank string"):
        write_manifest(tampered)


def test_writer_refuses_values_that_are_not_json() -> None:
    odd = _built_in_python().model_copy(update={"notes": float("nan")})
    with pytest.raises(ManifestError):
        write_manifest(odd)


def test_convenience_accessors() -> None:
    manifest = read_manifest(EXTENDED_BYTES)
    assert manifest.config_tag == "1.5.0"
    assert manifest.control_plane_digest is not None
    assert manifest.control_plane is not None
    assert manifest.control_plane.endswith(manifest.control_plane_digest)
    assert manifest.created_at is not None
    assert manifest.created_at.isoformat() == "2024-06-01T08:30:00+00:00"
    assert set(manifest.images.by_key()) == {
        "algaCore",
        "workflowWorker",
        "emailService",
        "temporalWorker",
    }
    leap = read_manifest((CORPUS / "created-fraction-leap-day.json").read_bytes())
    assert leap.created_at is not None
    assert leap.created_at.microsecond == 123456


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        for key in parents:
            document = document[key]
        if value is _DELETE:
            del document[last]
        else:
            document[last] = value

    return mutate


_DELETE = object()

STRICT_CASES: list[tuple[str, Mutation, str]] = [
    (
        "control plane bare tag",
        _set("controlPlane", "1.5.0"),
        "controlPlane: must be a digest-pinned reference 'repository@sha256:<64 hex>' for pub",
    ),
    (
        "control plane by tag",
        _set("controlPlane", f"{REG}/appliance-control-plane:1.5.0"),
        "controlPlane: must be a digest-pinned reference",
    ),
    (
        "control plane missing",
        _set("controlPlane", _DELETE),
        "controlPlane: field required for publishing",
    ),
    ("version not a tag", _set("version", "1.5.0 final"), "version: must be an OCI tag"),
    ("config tag not a tag", _set("config/tag", "1.5.0 final"), "config.tag: must be an OCI tag"),
    (
        "config version differs",
        _set("config/version", "1.4.9"),
        'config.version: must equal config.tag ("1.5.0") for older readers, not "1.4.9"',
    ),
    ("created missing", _set("created", _DELETE), "created: field required for publishing"),
    ("sequence missing", _set("sequence", _DELETE), "sequence: field required for publishing"),
    ("no charts", _set("charts", {}), "charts: must name at least one chart for publishing"),
    ("locks missing", _set("locks", _DELETE), "locks: field required for publishing"),
    (
        "image locks missing",
        _set("locks/images", _DELETE),
        "locks.images: field required for publishing",
    ),
    (
        "one image lock missing",
        _set("locks/images/emailService", _DELETE),
        "locks.images.emailService: missing; every entry of images needs a lock",
    ),
    (
        "lock for no image",
        _set("locks/images/ghost", f"{REG}/ghost@{DIGEST}"),
        "locks.images.ghost: locks nothing",
    ),
    (
        "chart locks missing",
        _set("locks/charts", _DELETE),
        "locks.charts: field required for publishing",
    ),
    (
        "one chart lock missing",
        _set("locks/charts/pgbouncer", _DELETE),
        "locks.charts.pgbouncer: missing; every entry of charts needs a lock",
    ),
    (
        "chart lock with wrong tag",
        _set("locks/charts/temporal/ref", f"oci://{REG}/charts/temporal:0.9.1"),
        'locks.charts.temporal.ref: must have the tag "0.9.1_alga.2"',
    ),
    (
        "chart lock for another chart",
        _set("locks/charts/sebastian/ref", f"oci://{REG}/charts/pgbouncer:1.4.0"),
        "locks.charts.sebastian.ref: must be a repository ending in /sebastian",
    ),
    (
        "control plane lock missing",
        _set("locks/controlPlane", _DELETE),
        "locks.controlPlane: field required for publishing",
    ),
    (
        "control plane lock differs",
        _set("locks/controlPlane", DIGEST),
        "locks.controlPlane: must equal the digest in controlPlane",
    ),
    (
        "config lock missing",
        _set("locks/config", _DELETE),
        "locks.config: field required for publishing",
    ),
    ("config lock differs", _set("locks/config", DIGEST), "locks.config: must equal config.digest"),
    (
        "values of another profile",
        _set("profileValues/sebastian.ha.yaml", "a: 1\n"),
        'profileValues["sebastian.ha.yaml"]: profile "ha" is not the valuesProfile "single-node"',
    ),
    (
        "values not YAML",
        _set("profileValues/sebastian.single-node.yaml", "a: [1\n"),
        'profileValues["sebastian.single-node.yaml"]: must be valid YAML',
    ),
    (
        "values not a mapping",
        _set("profileValues/sebastian.single-node.yaml", "- 1\n"),
        'profileValues["sebastian.single-node.yaml"]: must be a YAML mapping',
    ),
    (
        "values of a HelmRelease missing",
        _set("profileValues/pgbouncer.single-node.yaml", _DELETE),
        'profileValues["pgbouncer.single-node.yaml"]: missing; the bundle has a HelmRelease',
    ),
    (
        "values of no HelmRelease",
        _set("profileValues/ghost.single-node.yaml", "a: 1\n"),
        'profileValues: values for "ghost", which is not a HelmRelease of the bundle',
    ),
]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [(mutate, fragment) for _, mutate, fragment in STRICT_CASES],
    ids=[name for name, _, _ in STRICT_CASES],
)
def test_strict_rules_for_publishing(mutate: Mutation, fragment: str) -> None:
    document = copy.deepcopy(_extended())
    mutate(document)
    manifest = read_manifest(json.dumps(document).encode())  # the tolerant reader accepts it
    with pytest.raises(ManifestError) as caught:
        write_manifest(manifest, bundle_helmreleases=RELEASES)
    error = caught.value
    assert error.message.startswith("release manifest is not publishable: ")
    assert "\n" not in str(error)
    assert any(fragment in problem for problem in error.problems), error.problems
    with pytest.raises(ManifestError):
        manifest.validate_for_publish(RELEASES)


def test_all_problems_are_listed_and_summarised_in_one_line() -> None:
    document = _extended()
    del document["locks"]
    document["controlPlane"] = "1.5.0"
    with pytest.raises(ManifestError) as caught:
        write_manifest(read_manifest(json.dumps(document).encode()))
    assert len(caught.value.problems) == 2
    assert caught.value.message.endswith("(and 1 more problem)")


def test_without_bundle_names_profile_coverage_is_not_checked() -> None:
    document = _extended()
    del document["profileValues"]["pgbouncer.single-node.yaml"]
    manifest = read_manifest(json.dumps(document).encode())
    manifest.validate_for_publish()  # no bundle given: nothing to compare with
    with pytest.raises(ManifestError, match="pgbouncer"):
        manifest.validate_for_publish(RELEASES)


def test_legacy_shapes_are_readable_but_not_publishable() -> None:
    for name in ("minimal.json", "design-doc.json", "design-doc-bare-tag-control-plane.json"):
        manifest = read_manifest((CORPUS / name).read_bytes())
        with pytest.raises(ManifestError, match="not publishable"):
            write_manifest(manifest)
