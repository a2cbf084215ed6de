"""The real-registry harness works: each variant takes a raw distribution-API push and
pull, enforces its auth, and logs what it served. Raw httpx only, no project code."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import ssl
import time
from collections.abc import Generator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests import registry as harness
from tests.registry import (
    PROBE_USER_AGENT,
    RegistryFactory,
    RegistryInstance,
    TestCA,
)
from tests.tokenserver import Scope, TokenServer

pytestmark = pytest.mark.integration

VARIANTS = ["registry", "registry_basic", "registry_token", "registry_tls"]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = b"{}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- a minimal client side: bearer challenge, blob upload, manifest ------------------------
class TokenRefused(Exception):
    pass


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class BearerChallengeAuth(httpx.Auth):
    """401 with a Bearer challenge → GET the realm for its service and scope → retry once."""

    requires_response_body = True

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.username, self.password = username, password
        self.token: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if response.status_code != 401 or scheme != "bearer":
            return
        query = {"service": params["service"]}
        if "scope" in params:
            query["scope"] = params["scope"]
        token_request = httpx.Request("GET", params["realm"], params=query)
        if self.username is not None and self.password is not None:
            basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            token_request.headers["Authorization"] = f"Basic {basic}"
        token_response = yield token_request
        if token_response.status_code != 200:
            raise TokenRefused(f"token server answered {token_response.status_code}")
        self.token = str(token_response.json()["token"])
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def client_for(instance: RegistryInstance, *, with_credentials: bool = True) -> httpx.Client:
    auth: httpx.Auth | None = None
    user = instance.username if with_credentials else None
    password = instance.password if with_credentials else None
    if instance.auth == "basic" and user and password:
        auth = httpx.BasicAuth(user, password)
    elif instance.auth == "token":
        auth = BearerChallengeAuth(user, password)
    return httpx.Client(
        base_url=instance.url, auth=auth, verify=instance.ssl_context(), timeout=10.0
    )


def start_upload(client: httpx.Client, repo: str, **params: str) -> httpx.Response:
    return client.post(f"/v2/{repo}/blobs/uploads/", params=params)


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha256(data)
    started = start_upload(client, repo)
    assert started.status_code == 202, started.text
    location = client.base_url.join(started.headers["Location"])
    done = client.put(
        location.copy_merge_params({"digest": digest}),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert done.status_code == 201, done.text
    assert done.headers["Docker-Content-Digest"] == digest
    return digest


def manifest_for(layer: bytes) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": sha256(EMPTY_CONFIG),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [
            {
                "mediaType": "application/vnd.alga.test.layer.v1",
                "digest": sha256(layer),
                "size": len(layer),
            }
        ],
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def push_image(client: httpx.Client, repo: str, tag: str, layer: bytes) -> bytes:
    push_blob(client, repo, EMPTY_CONFIG)
    push_blob(client, repo, layer)
    manifest = manifest_for(layer)
    put = client.put(
        f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert put.status_code == 201, put.text
    assert put.headers["Docker-Content-Digest"] == sha256(manifest)
    return manifest


def assert_pullable(
    client: httpx.Client, repo: str, tag: str, layer: bytes, manifest: bytes
) -> None:
    got = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert got.status_code == 200, got.text
    assert got.content == manifest
    assert got.headers["Docker-Content-Digest"] == sha256(manifest)
    assert got.headers["Content-Type"] == OCI_MANIFEST
    blob = client.get(f"/v2/{repo}/blobs/{sha256(layer)}", follow_redirects=True)
    assert blob.status_code == 200
    assert blob.content == layer
    assert blob.headers["Docker-Content-Digest"] == sha256(layer)


# -- every variant -------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_push_and_pull_through_the_raw_api(variant: str, request: pytest.FixtureRequest) -> None:
    instance: RegistryInstance = request.getfixturevalue(variant)
    assert instance.host.startswith("127.0.0.1:") and instance.url.endswith(instance.host)
    assert instance.root_dir.is_dir() and instance.log_file.is_file()
    layer = f"layer of {variant} {time.time_ns()}".encode()
    repo = f"harness/{variant.replace('_', '-')}"
    with client_for(instance) as client:
        manifest = push_image(client, repo, "v1", layer)
        assert_pullable(client, repo, "v1", layer, manifest)
    # the bytes are in the storage root the fixture exposes
    blob_dir = instance.root_dir / "docker/registry/v2/blobs/sha256" / sha256(layer)[7:9]
    assert (blob_dir / sha256(layer)[7:] / "data").read_bytes() == layer


def test_variants_are_distinct(request: pytest.FixtureRequest) -> None:
    instances = [request.getfixturevalue(v) for v in VARIANTS]
    assert len({i.host for i in instances}) == len(VARIANTS)
    assert [i.scheme for i in instances] == ["http", "http", "http", "https"]
    assert [i.username for i in instances] == [None, "tester", "tester", None]
    assert [i.password for i in instances] == [None, "s3cret-basic", "s3cret-token", None]
    assert [i.ca_file is not None for i in instances] == [False, False, False, True]
    assert [i.token_server is not None for i in instances] == [False, False, True, False]


# -- basic auth ----------------------------------------------------------------------------
def test_basic_auth_is_enforced(registry_basic: RegistryInstance) -> None:
    with client_for(registry_basic, with_credentials=False) as anonymous:
        refused = start_upload(anonymous, "harness/basic-anon")
        assert refused.status_code == 401
        scheme, params = parse_challenge(refused.headers["WWW-Authenticate"])
        assert scheme == "basic" and params["realm"]
        assert anonymous.get("/v2/", auth=("tester", "wrong")).status_code == 401
        assert anonymous.get("/v2/", auth=("tester", "s3cret-basic")).status_code == 200


# -- token auth ----------------------------------------------------------------------------
def _token_server(instance: RegistryInstance) -> TokenServer:
    assert instance.token_server is not None
    return instance.token_server


def test_token_registry_challenges_with_the_token_server(registry_token: RegistryInstance) -> None:
    server = _token_server(registry_token)
    answer = httpx.get(f"{registry_token.url}/v2/")
    assert answer.status_code == 401
    scheme, params = parse_challenge(answer.headers["WWW-Authenticate"])
    assert scheme == "bearer"
    assert params["realm"] == server.url
    assert params["service"] == server.service


def test_anonymous_token_pulls_but_cannot_push(registry_token: RegistryInstance) -> None:
    server = _token_server(registry_token)
    layer = f"public {time.time_ns()}".encode()
    with client_for(registry_token) as tester:
        manifest = push_image(tester, "harness/public", "v1", layer)
    before = server.request_count
    with client_for(registry_token, with_credentials=False) as anonymous:
        assert_pullable(anonymous, "harness/public", "v1", layer, manifest)
        refused = start_upload(anonymous, "harness/public")
    assert refused.status_code == 401
    _, params = parse_challenge(refused.headers["WWW-Authenticate"])
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "repository:harness/public:pull,push"
    assert server.request_count > before
    last = server.requests[-1]
    assert last.account is None and last.status == 200
    assert last.granted == (Scope("repository", "harness/public", frozenset({"pull"})),)


def test_token_server_refuses_a_wrong_password(registry_token: RegistryInstance) -> None:
    server = _token_server(registry_token)
    params = {"service": server.service, "scope": "repository:x/y:pull"}
    assert httpx.get(server.url, params=params, auth=("tester", "wrong")).status_code == 401
    assert httpx.get(server.url, params=params, auth=("nobody", "x")).status_code == 401
    assert server.requests[-1].status == 401
    with client_for(registry_token, with_credentials=False) as client:
        client.auth = BearerChallengeAuth("tester", "wrong")
        with pytest.raises(TokenRefused, match="401"):
            client.get("/v2/x/y/tags/list")


def _decode(server: TokenServer, token: str) -> dict[str, object]:
    """Verify the token the way the registry does: the x5c leaf's key, audience, issuer."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    claims: dict[str, object] = jwt.decode(
        token, key, algorithms=["ES256"], audience=server.service, issuer=server.issuer
    )
    return claims


def test_merged_scopes_allow_a_cross_repository_mount(registry_token: RegistryInstance) -> None:
    server = _token_server(registry_token)
    layer = f"mount me {time.time_ns()}".encode()
    with client_for(registry_token) as tester:
        push_blob(tester, "harness/mount-source", layer)
    # repeated and space-separated scope parameters, one resource asked for twice
    query: list[tuple[str, str | int | float | bool | None]] = [
        ("service", server.service),
        ("scope", "repository:harness/mount-target:pull"),
        ("scope", "repository:harness/mount-target:push repository:harness/mount-source:pull"),
    ]
    with server.lifetime(42):
        answer = httpx.get(server.url, params=query, auth=("tester", "s3cret-token"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 42 and body["issued_at"].endswith("Z")
    claims = _decode(server, body["token"])
    assert claims["sub"] == "tester"
    assert int(claims["exp"]) - int(claims["iat"]) == 42  # type: ignore[call-overload]
    assert {"nbf", "jti"} <= claims.keys()
    assert claims["access"] == [
        {"type": "repository", "name": "harness/mount-target", "actions": ["pull", "push"]},
        {"type": "repository", "name": "harness/mount-source", "actions": ["pull"]},
    ]
    mounted = httpx.post(
        f"{registry_token.url}/v2/harness/mount-target/blobs/uploads/",
        params={"mount": sha256(layer), "from": "harness/mount-source"},
        headers={"Authorization": f"Bearer {body['token']}"},
    )
    assert mounted.status_code == 201, mounted.text
    assert mounted.headers["Docker-Content-Digest"] == sha256(layer)


def test_registry_rejects_expired_and_untrusted_tokens(registry_token: RegistryInstance) -> None:
    server = _token_server(registry_token)
    catalog = [Scope("repository", "harness/public", frozenset({"pull"}))]
    url = f"{registry_token.url}/v2/harness/public/tags/list"

    def status(token: str) -> int:
        return httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code

    assert status(server.issue_token(None, catalog)) in (200, 404)  # 404: repo not pushed yet
    # distribution 2.8 allows 60 s of clock skew past exp
    expired = server.issue_token(None, catalog, expires_in=60, now=time.time() - 3600)
    assert status(expired) == 401
    key, cert = TestCA.create("an untrusted CA").issue("impostor")
    impostor = TokenServer(
        service=server.service, issuer=server.issuer, signing_key=key, cert_chain=[cert], users={}
    )
    assert status(impostor.issue_token(None, catalog)) == 401


# -- TLS -----------------------------------------------------------------------------------
def test_tls_is_trusted_only_with_the_ca(registry_tls: RegistryInstance) -> None:
    assert registry_tls.ca_file is not None and registry_tls.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(registry_tls.ca_file))
    with httpx.Client(verify=context) as trusting:
        assert trusting.get(f"{registry_tls.url}/v2/").status_code == 200
    with httpx.Client() as default_trust, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
        default_trust.get(f"{registry_tls.url}/v2/")
    # Go's TLS server answers plain HTTP with a bare 400
    plain = httpx.get(f"http://{registry_tls.host}/v2/")
    assert plain.status_code == 400 and b"HTTPS server" in plain.content


# -- the access log ------------------------------------------------------------------------
def test_access_log_sees_each_request(registry: RegistryInstance) -> None:
    since = len(registry.access_log())
    layer = f"logged {time.time_ns()}".encode()
    with client_for(registry) as client:
        push_image(client, "harness/logged", "v1", layer)
        assert client.head(f"/v2/harness/logged/blobs/{sha256(layer)}").status_code == 200
        assert client.get("/v2/harness/logged/manifests/absent").status_code == 404
    new = registry.access_log()[since:]
    base = "/v2/harness/logged"
    upload = re.compile(rf"{base}/blobs/uploads/[0-9a-f-]+$")
    assert [(r.method, r.status) for r in new] == [
        ("POST", 202),
        ("PUT", 201),
        ("POST", 202),
        ("PUT", 201),
        ("PUT", 201),
        ("HEAD", 200),
        ("GET", 404),
    ]
    assert [new[0].path, new[2].path] == [f"{base}/blobs/uploads/"] * 2
    assert upload.match(new[1].path) and upload.match(new[3].path)
    assert new[4:] == [
        harness.LoggedRequest(
            "PUT",
            f"{base}/manifests/v1",
            201,
            user_agent=new[4].user_agent,
            request_id=new[4].request_id,
        ),
        harness.LoggedRequest(
            "HEAD",
            f"{base}/blobs/{sha256(layer)}",
            200,
            user_agent=new[5].user_agent,
            request_id=new[5].request_id,
        ),
        harness.LoggedRequest(
            "GET",
            f"{base}/manifests/absent",
            404,
            user_agent=new[6].user_agent,
            request_id=new[6].request_id,
        ),
    ]
    assert registry.count_requests("PUT", "/v2/harness/logged/", since=since) == 3
    assert registry.count_requests("post", "/blobs/uploads/", since=since) == 2
    assert registry.count_requests(since=since) == len(new) == 7
    assert all(r.user_agent != PROBE_USER_AGENT for r in registry.access_log())
    put_blob = next(r for r in new if r.method == "PUT" and "/blobs/uploads/" in r.path)
    assert "digest=sha256" in put_blob.query


def test_access_log_records_refused_requests(registry_basic: RegistryInstance) -> None:
    since = len(registry_basic.access_log())
    with client_for(registry_basic, with_credentials=False) as anonymous:
        assert anonymous.get("/v2/harness/x/tags/list").status_code == 401
    with client_for(registry_basic) as tester:
        assert tester.get("/v2/harness/x/tags/list").status_code == 404
    new = registry_basic.access_log()[since:]
    assert [(r.method, r.path, r.status, r.user) for r in new] == [
        ("GET", "/v2/harness/x/tags/list", 401, None),
        ("GET", "/v2/harness/x/tags/list", 404, "tester"),
    ]


# -- on-demand registries and start-up failures --------------------------------------------
def test_factory_starts_independent_registries(registry_factory: RegistryFactory) -> None:
    first = registry_factory()
    second = registry_factory(auth="basic", tls=True)
    assert first.host != second.host and second.scheme == "https"
    layer = b"only in the first"
    with client_for(first) as client:
        push_image(client, "harness/copy", "v1", layer)
    with client_for(second) as client:
        assert client.get("/v2/harness/copy/manifests/v1").status_code == 404
        assert client.get("/v2/").status_code == 200


def test_a_registry_that_cannot_start_fails_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(harness, "free_port", lambda: taken.getsockname()[1])
        with pytest.raises(pytest.fail.Exception, match="address already in use"):
            with harness.running_registry(tmp_path, harness._Options()):
                pass
