"""Digest and Reference grammar: valid forms parse, every invalid form names its rule."""

from __future__ import annotations

import pytest

from ocicore.digest import Digest
from ocicore.errors import InvalidDigestError, InvalidReferenceError
from ocicore.reference import Reference

HEX64 = "a" * 64


def test_digest_round_trip_and_helpers() -> None:
    d = Digest.parse(f"sha256:{HEX64}")
    assert str(d) == f"sha256:{HEX64}"
    assert d.tag_form == f"sha256-{HEX64}"
    assert Digest.of(b"").hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert Digest.of(b"x").matches(b"x") and not Digest.of(b"x").matches(b"y")
    assert Digest.parse("sha512:" + "b" * 128).algorithm == "sha512"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("sha256:" + "a" * 63, "exactly 64 lowercase hex"),
        ("sha256:" + "a" * 65, "exactly 64 lowercase hex"),
        ("sha256:" + "A" * 64, "exactly 64 lowercase hex"),
        ("md5:" + "a" * 32, "unsupported algorithm 'md5'"),
        ("sha256" + "a" * 64, "expected '<algorithm>:<hex>'"),
        ("", "expected '<algorithm>:<hex>'"),
        ("sha256:", "expected '<algorithm>:<hex>'"),
        ("SHA256:" + "a" * 64, "expected '<algorithm>:<hex>'"),
    ],
)
def test_bad_digests_are_refused_with_the_rule(text: str, fragment: str) -> None:
    with pytest.raises(InvalidDigestError, match=fragment):
        Digest.parse(text)


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("alga/sebastian:1.0", "docker.io", "alga/sebastian", "1.0", None),
        ("index.docker.io/alga/x:1", "docker.io", "alga/x", "1", None),
        ("ghcr.io/alga/sebastian:1.0.3", "ghcr.io", "alga/sebastian", "1.0.3", None),
        ("localhost/x", "localhost", "x", "latest", None),
        ("127.0.0.1:5000/alga/charts/sebastian:1.0.0_build.1", "127.0.0.1:5000",
         "alga/charts/sebastian", "1.0.0_build.1", None),
        (f"oci://ghcr.io/a/b@sha256:{HEX64}", "ghcr.io", "a/b", None, f"sha256:{HEX64}"),
        (f"ghcr.io/a/b:1@sha256:{HEX64}", "ghcr.io", "a/b", "1", f"sha256:{HEX64}"),
        ("[::1]:5000/a/b:t", "[::1]:5000", "a/b", "t", None),
    ],
)
def test_references_normalise_like_docker(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest


def test_docker_hub_api_host_and_pinned_form() -> None:
    ref = Reference.parse(f"nginx@sha256:{HEX64}")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.pinned() == f"docker.io/library/nginx@sha256:{HEX64}"
    with pytest.raises(InvalidReferenceError, match="not pinned"):
        Reference.parse("nginx:1").pinned()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ghcr.io/Alga/x:1", "component 'Alga' must be lowercase"),
        ("ghcr.io/a//b", "component '' must be"),
        ("ghcr.io/a/b:-bad", "invalid tag '-bad'"),
        ("ghcr.io/a/b:" + "t" * 129, "invalid tag"),
        ("ghcr.io/a/b@sha256:abc", "exactly 64 lowercase hex"),
        ("ghcr.io/a_/b", "component 'a_'"),
        ("ghcr.io/" + "a" * 256, "over the 255 limit"),
        (" ghcr.io/a", "empty or padded"),
        ("", "empty or padded"),
        ("-bad.example/x", "invalid registry host"),
    ],
)
def test_bad_references_are_refused_with_the_rule(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError, match=fragment):
        Reference.parse(text)
