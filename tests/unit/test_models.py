"""OCI wire models: unknown fields survive, invalid documents are refused by name."""

from __future__ import annotations

import pytest

from ocicore.models import Index, Manifest, ManifestFormatError, parse_manifest

HEX = "a" * 64


def test_round_trip_keeps_unknown_fields_byte_for_byte() -> None:
    raw = (
        b'{"config":{"digest":"sha256:' + HEX.encode() + b'","mediaType":"a","size":1,"x-extra":1},'
        b'"layers":[],"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        b'"schemaVersion":2,"x-top":{"k":"v"}}'
    )
    parsed = parse_manifest(raw)
    assert isinstance(parsed, Manifest)
    assert parsed.to_json() == raw


def test_index_is_recognised_without_media_type() -> None:
    raw = b'{"schemaVersion":2,"manifests":[]}'
    assert isinstance(parse_manifest(raw), Index)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"[]", "not a JSON object"),
        (b'{"schemaVersion":1,"config":{},"layers":[]}', "schemaVersion"),
        (b'{"schemaVersion":2,"layers":[]}', "config: Field required"),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:abc","size":1},'
            b'"layers":[]}',
            "config.digest: Value error, invalid digest",
        ),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:'
            + HEX.encode()
            + b'","size":-1},"layers":[]}',
            "config.size",
        ),
        (b'{"schemaVersion":2,"schemaVersion":2}', "duplicate key"),
    ],
)
def test_invalid_manifests_name_the_field(raw: bytes, fragment: str) -> None:
    with pytest.raises((ManifestFormatError, Exception), match=fragment):
        parse_manifest(raw)
