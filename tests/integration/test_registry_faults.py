"""Faults a real registry cannot produce on demand, injected in front of a real one.

Each test pairs the fault with the same operation's success through the same
real registry, and checks that the outcome is a retry that succeeds or a typed
error, and that nothing unverified reaches its final path.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from ocicore.client import RegistryClient
from ocicore.config import ClientConfig, RetryPolicy
from ocicore.digest import Digest
from ocicore.errors import DigestMismatchError, IntegrityError, SizeLimitError, TransportError
from ocicore.models import OCI_MANIFEST
from tests.support import faults
from tests.support.artifacts import push_artifact

pytestmark = pytest.mark.integration

BLOB_PATH = r"/v2/faults/x/blobs/sha256:"
MANIFEST_PATH = r"/v2/faults/x/manifests/"


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="module")
def seeded(registry: object) -> tuple[Digest, bytes, str]:
    data = os.urandom(256 * 1024)
    with RegistryClient(registry.host, credentials=None) as client:  # type: ignore[attr-defined]
        digest, _ = push_artifact(client, "faults/x", "v1", [data])
    return digest, data, registry.host  # type: ignore[attr-defined]


def _client(
    host: str, transport: faults.FaultTransport, sleeps: Sleeps, **config: object
) -> RegistryClient:
    http = httpx.Client(transport=transport, follow_redirects=True)
    cfg = ClientConfig(**config)  # type: ignore[arg-type]
    return RegistryClient(
        host, http=http, credentials=None, plain_http=True, config=cfg, sleep=sleeps
    )


def _layer(client: RegistryClient, digest: Digest) -> object:
    manifest = client.get_manifest("faults/x", digest).parse()
    return manifest.layers[0]  # type: ignore[union-attr]


def test_429_with_retry_after_is_honoured(
    seeded: tuple[Digest, bytes, str], tmp_path: Path
) -> None:
    digest, data, host = seeded
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("GET", BLOB_PATH, faults.status(429, {"Retry-After": "7"}))
    with _client(host, transport, sleeps) as client:
        client.fetch_blob("faults/x", _layer(client, digest), tmp_path / "b")  # type: ignore[arg-type]
    assert (tmp_path / "b").read_bytes() == data
    assert sleeps == [7.0]


def test_retry_after_is_capped_by_the_ceiling(seeded: tuple[Digest, bytes, str]) -> None:
    digest, _, host = seeded
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("HEAD", MANIFEST_PATH, faults.status(429, {"Retry-After": "3600"}))
    with _client(host, transport, sleeps, retry=RetryPolicy(retry_after_ceiling=5)) as client:
        assert client.resolve("faults/x", "v1").digest == digest
    assert sleeps == [5.0]


def test_503_twice_then_success(seeded: tuple[Digest, bytes, str]) -> None:
    digest, _, host = seeded
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("GET", MANIFEST_PATH, faults.status(503), times=2)
    with _client(host, transport, sleeps) as client:
        assert client.get_manifest("faults/x", digest).digest == digest
        assert client.stats.retries == 2
    assert len(sleeps) == 2 and sleeps[0] <= sleeps[1] * 2  # exponential with jitter


def test_persistent_503_ends_in_a_transport_error(seeded: tuple[Digest, bytes, str]) -> None:
    _, _, host = seeded
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("GET", MANIFEST_PATH, faults.status(503), times=100)
    with (
        _client(host, transport, sleeps) as client,
        pytest.raises(TransportError, match=r"503 Service Unavailable after 5 attempt\(s\)"),
    ):
        client.get_manifest("faults/x", "v1")


def test_connection_reset_mid_blob_is_retried(
    seeded: tuple[Digest, bytes, str], tmp_path: Path
) -> None:
    digest, data, host = seeded
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("GET", BLOB_PATH, faults.reset_after(1000))
    with _client(host, transport, sleeps) as client:
        client.fetch_blob("faults/x", _layer(client, digest), tmp_path / "b")  # type: ignore[arg-type]
    assert (tmp_path / "b").read_bytes() == data
    assert [p for m, p in transport.seen if m == "GET" and "blobs" in p].__len__() == 2


def test_truncated_body_never_reaches_the_final_path(
    seeded: tuple[Digest, bytes, str], tmp_path: Path
) -> None:
    digest, _, host = seeded
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("GET", BLOB_PATH, faults.truncate_after(5000), times=100)
    with _client(host, transport, sleeps) as client:
        layer = _layer(client, digest)
        with pytest.raises(IntegrityError, match="got 5000 bytes, the descriptor says 262144"):
            client.fetch_blob("faults/x", layer, tmp_path / "b")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_flipped_byte_is_retried_then_refused(
    seeded: tuple[Digest, bytes, str], tmp_path: Path
) -> None:
    digest, data, host = seeded
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("GET", BLOB_PATH, faults.flip_byte(12345))
    with _client(host, transport, sleeps) as client:
        layer = _layer(client, digest)
        client.fetch_blob("faults/x", layer, tmp_path / "ok")  # type: ignore[arg-type]
        assert (tmp_path / "ok").read_bytes() == data
        transport.add("GET", BLOB_PATH, faults.flip_byte(7), times=100)
        with pytest.raises(DigestMismatchError, match="hashes to sha256:"):
            client.fetch_blob("faults/x", layer, tmp_path / "bad")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


def test_flipped_byte_in_a_manifest_by_digest(seeded: tuple[Digest, bytes, str]) -> None:
    digest, _, host = seeded
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("GET", MANIFEST_PATH, faults.flip_byte(40), times=100)
    with (
        _client(host, transport, sleeps) as client,
        pytest.raises(DigestMismatchError, match=f"expected digest {digest}"),
    ):
        client.get_manifest("faults/x", digest)


def test_registry_returning_a_different_digest_header(seeded: tuple[Digest, bytes, str]) -> None:
    _, _, host = seeded
    transport, sleeps = faults.FaultTransport(), Sleeps()
    other = str(Digest.of(b"something else"))
    transport.add("GET", MANIFEST_PATH, faults.replace_header("Docker-Content-Digest", other))
    with (
        _client(host, transport, sleeps) as client,
        pytest.raises(DigestMismatchError, match="Docker-Content-Digest header"),
    ):
        client.get_manifest("faults/x", "v1")
    transport2 = faults.FaultTransport()
    transport2.add("HEAD", MANIFEST_PATH, faults.replace_header("Docker-Content-Digest", other))
    digest = seeded[0]
    with _client(host, transport2, sleeps) as client, pytest.raises(DigestMismatchError):
        client.resolve("faults/x", digest)


def test_manifest_body_over_the_cap_is_not_read(seeded: tuple[Digest, bytes, str]) -> None:
    _, _, host = seeded
    transport, sleeps = faults.FaultTransport(), Sleeps()
    body = b"{" + b" " * (5 * 1024 * 1024) + b"}"
    transport.add("GET", MANIFEST_PATH, faults.serve_body(body, {"Content-Type": OCI_MANIFEST}))
    with _client(host, transport, sleeps) as client, pytest.raises(SizeLimitError):
        client.get_manifest("faults/x", "v1")


def test_failed_upload_session_restarts_cleanly(registry: object) -> None:
    data = os.urandom(100_000)
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("PUT", r"/v2/faults/up/blobs/uploads/", faults.status(502))
    with _client(registry.host, transport, sleeps) as client:  # type: ignore[attr-defined]
        assert client.push_blob("faults/up", data) == "uploaded"
        assert client.blob_exists("faults/up", Digest.of(data))
    posts = [p for m, p in transport.seen if m == "POST"]
    puts = [p for m, p in transport.seen if m == "PUT"]
    assert len(posts) == 2 and len(puts) == 2  # a new session, not a replayed PUT


def test_non_idempotent_post_is_not_replayed_blindly(registry: object) -> None:
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("POST", r"/v2/faults/post/blobs/uploads/", faults.status(500), times=100)
    config = {"retry": RetryPolicy(max_attempts=3)}
    with _client(registry.host, transport, sleeps, **config) as client:  # type: ignore[attr-defined]
        with pytest.raises(TransportError, match="500"):
            client.push_blob("faults/post", b"payload")
    methods = [m for m, _ in transport.seen]
    # each POST is followed by a HEAD check before a fresh session is started
    assert methods == ["HEAD", "POST", "HEAD", "POST", "HEAD", "POST"]


def test_tag_listing_follows_link_pagination(registry: object) -> None:
    transport, sleeps = faults.FaultTransport(), Sleeps()
    transport.add("GET", r"/v2/faults/paged/tags/list", faults.paginate_tags(3), times=100)
    with _client(registry.host, transport, sleeps) as client:  # type: ignore[attr-defined]
        digest, _ = push_artifact(client, "faults/paged", "t00", [b"p"])
        for i in range(1, 10):
            client.tag_manifest("faults/paged", digest, f"t{i:02d}")
        requests_before = client.stats.requests
        tags = client.list_tags("faults/paged")
        assert tags == [f"t{i:02d}" for i in range(10)]
        assert client.stats.requests - requests_before == 4  # pages of 3, 3, 3, 1


def test_oversized_or_broken_token_responses(registry_token: object) -> None:
    """A token service that answers megabytes, or JSON without a token, is refused with
    a one-line error instead of being read into memory or retried forever."""
    from ocicore.credentials import Credentials

    host = registry_token.host  # type: ignore[attr-defined]
    creds = Credentials(registry_token.username, registry_token.password, source="t")  # type: ignore[attr-defined]
    for body, fragment in [
        (b"x" * (2 * 1024 * 1024), "sent more than"),
        (b'{"nothing": "here"}', "answered without a token"),
    ]:
        transport = faults.FaultTransport()
        transport.add("GET", r"^/token", faults.serve_body(body, {}))
        http = httpx.Client(transport=transport)
        with (
            RegistryClient(
                host, http=http, credentials=creds, plain_http=True, sleep=Sleeps()
            ) as client,
            pytest.raises(TransportError, match=fragment),
        ):
            client.list_tags("any/repo")
