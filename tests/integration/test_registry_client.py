"""RegistryClient against real registry processes: every auth variant, TLS, mounts,
pagination, deletes, referrers fallback, and hostile content."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from ocicore.client import RegistryClient
from ocicore.config import ClientConfig
from ocicore.credentials import Credentials
from ocicore.digest import Digest
from ocicore.errors import (
    AuthenticationError,
    InvalidReferenceError,
    NotFoundError,
    SizeLimitError,
    TransportError,
)
from ocicore.models import OCI_INDEX, OCI_MANIFEST, Descriptor, Index
from tests.support.artifacts import LAYER_TYPE, push_artifact

pytestmark = pytest.mark.integration


def _client(instance: object, **kwargs: object) -> RegistryClient:
    username = getattr(instance, "username", None)
    password = getattr(instance, "password", None)
    creds = Credentials(username, password, source="test") if username else None
    return RegistryClient(
        instance.host,  # type: ignore[attr-defined]
        credentials=creds,
        ca_file=getattr(instance, "ca_file", None),
        **kwargs,  # type: ignore[arg-type]
    )


def _round_trip(client: RegistryClient, repo: str, tmp_path: Path) -> None:
    layers = [os.urandom(300_000), b"second layer"]
    digest, manifest = push_artifact(client, repo, "v1", layers)
    desc = client.resolve(repo, "v1")
    assert desc.digest == digest and desc.media_type == OCI_MANIFEST
    fetched = client.get_manifest(repo, digest)
    assert fetched.data == manifest.to_json()
    for i, layer in enumerate(manifest.layers):
        dest = tmp_path / f"layer{i}"
        client.fetch_blob(repo, layer, dest)
        assert dest.read_bytes() == layers[i]
    assert "v1" in client.list_tags(repo)


@pytest.mark.parametrize(
    "variant", ["registry", "registry_basic", "registry_token", "registry_tls"]
)
def test_round_trip_on_every_variant(
    variant: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    instance = request.getfixturevalue(variant)
    with _client(instance) as client:
        _round_trip(client, f"roundtrip/{variant.replace('_', '-')}", tmp_path)


def test_token_is_cached_per_scope(registry_token: object) -> None:
    with _client(registry_token) as client:
        push_artifact(client, "cache/a", "v1", [b"abc"])
        before = client.auth.token_requests
        requests_before = client.stats.requests
        client.resolve("cache/a", "v1")
        client.resolve("cache/a", "v1")
        assert client.auth.token_requests == before  # push token covers pull
        # each warm resolve is one request: the cached token is sent up front
        assert client.stats.requests - requests_before == 2


def test_cross_repository_mount_uploads_no_bytes(registry_token: object) -> None:
    data = os.urandom(200_000)
    with _client(registry_token) as client:
        push_artifact(client, "mount/source", "v1", [data])
        digest = Digest.of(data)
        log_before = len(registry_token.access_log())  # type: ignore[attr-defined]
        uploaded_before = client.stats.bytes_uploaded
        assert client.push_blob("mount/target", data, mount_from=["mount/source"]) == "mounted"
        assert client.stats.bytes_uploaded == uploaded_before
        assert client.blob_exists("mount/target", digest)
    new = registry_token.access_log()[log_before:]  # type: ignore[attr-defined]
    assert not [r for r in new if r.method in ("PUT", "PATCH") and "/blobs/uploads/" in r.path]
    assert [r for r in new if r.method == "POST" and r.status == 201]


def test_anonymous_push_to_token_registry_is_refused(registry_token: object) -> None:
    with RegistryClient(registry_token.host, credentials=None) as client:  # type: ignore[attr-defined]
        with pytest.raises(AuthenticationError, match="requires authentication"):
            client.push_blob("anon/x", b"data")


def test_wrong_password_is_refused(registry_basic: object, registry_token: object) -> None:
    bad = Credentials("tester", "wrong", source="test")
    with RegistryClient(registry_basic.host, credentials=bad) as client:  # type: ignore[attr-defined]
        with pytest.raises(AuthenticationError, match="401"):
            client.list_tags("any/repo")
    with RegistryClient(registry_token.host, credentials=bad) as client:  # type: ignore[attr-defined]
        with pytest.raises(AuthenticationError, match=r"token server .* refused"):
            client.list_tags("any/repo")


def test_tls_needs_the_ca(registry_tls: object) -> None:
    with RegistryClient(registry_tls.host, credentials=None) as client:  # type: ignore[attr-defined]
        with pytest.raises(TransportError, match="--ca-file"):
            client.ping()


def test_plain_http_registry_with_https_forced(registry: object) -> None:
    with RegistryClient(registry.host, credentials=None, plain_http=False) as client:  # type: ignore[attr-defined]
        with pytest.raises(TransportError, match=r"speaks plain HTTP.*--plain-http"):
            client.ping()


def test_unreachable_registry_is_a_transport_error() -> None:
    config = ClientConfig()
    with RegistryClient(
        "127.0.0.1:1", credentials=None, plain_http=True, config=config, sleep=lambda s: None
    ) as client:
        with pytest.raises(TransportError, match=r"failed after 5 attempt\(s\)"):
            client.ping()


def test_catalog_listing_follows_pagination(registry: object) -> None:
    """distribution 2.8 paginates the catalog with Link headers (its tag list it does not;
    tag pagination is covered in test_registry_faults through a paginating proxy)."""
    config = ClientConfig(tag_page_size=2)
    with _client(registry, config=config) as client:
        for i in range(5):
            push_artifact(client, f"catalog/r{i}", "v1", [b"c"])
        requests_before = client.stats.requests
        repos = client.list_repositories()
        assert {f"catalog/r{i}" for i in range(5)} <= set(repos)
        assert len(repos) == len(set(repos))
        assert client.stats.requests - requests_before >= 3
        assert client.list_tags("catalog/none", missing_ok=True) == []
        with pytest.raises(NotFoundError):
            client.list_tags("catalog/none")


def test_tagging_uploads_nothing(registry: object) -> None:
    with _client(registry) as client:
        digest, _ = push_artifact(client, "tagging/x", "v1", [os.urandom(1000)])
        uploaded = client.stats.bytes_uploaded
        client.tag_manifest("tagging/x", digest, "stable")
        assert client.resolve("tagging/x", "stable").digest == digest
        assert client.stats.bytes_uploaded == uploaded


def test_second_push_is_skipped(registry: object) -> None:
    data = os.urandom(50_000)
    with _client(registry) as client:
        assert client.push_blob("skip/x", data) == "uploaded"
        assert client.push_blob("skip/x", data) == "skipped"
        assert client.stats.blobs_uploaded == 1


def test_chunked_upload(registry: object, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    config = ClientConfig(chunked_upload=True, chunk_size=1024 * 1024)
    with _client(registry, config=config) as client:
        assert client.push_blob("chunked/x", path) == "uploaded"
        dest = tmp_path / "back"
        client.fetch_blob("chunked/x", Descriptor.of("x", data), dest)
        assert dest.read_bytes() == data


def test_delete_manifest(registry: object) -> None:
    with _client(registry) as client:
        digest, _ = push_artifact(client, "delete/x", "v1", [b"gone"])
        client.delete_manifest("delete/x", digest)
        assert not client.manifest_exists("delete/x", digest)


def test_referrers_fall_back_to_the_tag_schema(registry: object) -> None:
    with _client(registry) as client:
        subject_digest, _ = push_artifact(client, "refs/x", "v1", [b"subject"])
        subject = client.resolve("refs/x", subject_digest)
        assert client.referrers("refs/x", subject_digest) == []
        sig_digest, sig = push_artifact(client, "refs/x", "sig", [b"signature"])
        entry = Descriptor(
            media_type=OCI_MANIFEST,
            digest=sig_digest,
            size=len(sig.to_json()),
            artifact_type="application/vnd.alga.sig",
        )
        index = Index(schema_version=2, media_type=OCI_INDEX, manifests=[entry], subject=subject)
        client.push_manifest("refs/x", index.to_json(), OCI_INDEX, tag=subject_digest.tag_form)
        found = client.referrers("refs/x", subject_digest)
        assert [d.digest for d in found] == [sig_digest]
        assert client.referrers("refs/x", subject_digest, artifact_type="other/type") == []


def test_oversize_manifest_is_refused(registry: object) -> None:
    """We refuse to push a >4 MiB manifest, as the real registry does; reading one is
    covered in test_registry_faults (a registry that serves one has to be simulated)."""
    with _client(registry) as client:
        _, manifest = push_artifact(client, "huge/x", "small", [b"x"])
        big = manifest.model_copy(update={"annotations": {"pad": "x" * (5 * 1024 * 1024)}})
        data = big.to_json()
        with pytest.raises(SizeLimitError, match="over the 4194304-byte limit"):
            client.push_manifest("huge/x", data, OCI_MANIFEST, tag="big")
        assert client.stats.bytes_uploaded == 3  # only the artifact's own blobs
    raw = httpx.put(
        f"{registry.url}/v2/huge/x/manifests/big",  # type: ignore[attr-defined]
        content=data,
        headers={"Content-Type": OCI_MANIFEST},
        timeout=30,
    )
    assert raw.status_code == 400  # distribution agrees


def test_blob_larger_than_its_descriptor_is_refused(registry: object, tmp_path: Path) -> None:
    data = os.urandom(2000)
    with _client(registry) as client:
        client.push_blob("liar/x", data)
        lying = Descriptor(media_type=LAYER_TYPE, digest=Digest.of(data), size=1000)
        dest = tmp_path / "blob"
        with pytest.raises(SizeLimitError, match="larger than the 1000 bytes its descriptor says"):
            client.fetch_blob("liar/x", lying, dest)
        assert not dest.exists()
        assert list(tmp_path.iterdir()) == []


def test_invalid_names_are_refused_before_any_request(registry: object) -> None:
    with _client(registry) as client:
        with pytest.raises(InvalidReferenceError, match="must be lowercase"):
            client.get_manifest("Bad/Repo", "v1")
        with pytest.raises(InvalidReferenceError, match="invalid tag"):
            client.get_manifest("ok/repo", "-bad")
        assert client.stats.requests == 0


def test_unknown_manifest_names_the_oci_code(registry: object) -> None:
    with _client(registry) as client:
        with pytest.raises(NotFoundError, match=r"MANIFEST_UNKNOWN|NAME_UNKNOWN"):
            client.get_manifest("nothing/here", "v1")


def test_expired_token_is_replaced_transparently(registry_token: object) -> None:
    """A token past its lifetime (minus the clock-skew margin) is not sent again: the
    next request gets a fresh one, and the caller sees no error."""
    server = registry_token.token_server  # type: ignore[attr-defined]
    with _client(registry_token) as client, server.lifetime(11):  # usable for 1 s here
        push_artifact(client, "expiry/x", "v1", [b"e"])
        first = client.auth.token_requests
        client.resolve("expiry/x", "v1")
        assert client.auth.token_requests == first  # still valid: reused
        time.sleep(1.2)
        assert client.resolve("expiry/x", "v1").media_type == OCI_MANIFEST
        assert client.auth.token_requests == first + 1  # expired: replaced, no error


def test_unresolvable_host_fails_at_once() -> None:
    with RegistryClient("no-such-registry.invalid", credentials=None,
                        sleep=lambda s: None) as client:
        with pytest.raises(TransportError, match="does not resolve"):
            client.ping()
        assert client.stats.retries == 0
