"""A bearer-token server for the real-registry test harness, modelled on ghcr's anonymous flow.

The registry (distribution 2.8, ``auth.token``) answers 401 with
``WWW-Authenticate: Bearer realm=<this server>,service=…,scope=…``; the client then
GETs the realm with one or more ``scope`` parameters (and basic auth for a user)
and receives an ES256 JWT whose ``x5c`` header carries the signing certificate, which
the registry checks against its ``rootcertbundle``.

Grants: anonymous callers get ``pull`` on every repository; a known user gets
``pull,push,delete`` on every repository and ``*`` on ``registry:catalog``. Requested
actions are intersected with the grant, so asking for more than allowed yields a token
with less (the registry then answers 401 ``insufficient_scope``), as real token servers do.
A wrong password is a 401 from this server.

Runs in a daemon thread on its own free 127.0.0.1 port. Thread-safe counters let tests
assert how many tokens a client fetched.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ANONYMOUS_ACTIONS: frozenset[str] = frozenset({"pull"})
USER_ACTIONS: frozenset[str] = frozenset({"pull", "push", "delete"})


@dataclass(frozen=True)
class Scope:
    """One ``type:name:actions`` resource scope, e.g. ``repository:a/b:pull,push``."""

    type: str
    name: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse a scope; the name may itself contain ``:`` (a registry host with a port).

        Raises ValueError for text without a type, name and action list.
        """
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not (sep and sep2 and kind and name):
            raise ValueError(f"malformed scope {text!r}")
        return cls(kind, name, frozenset(a for a in actions.split(",") if a))

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}


@dataclass(frozen=True)
class TokenRequest:
    """What one call to the token endpoint asked for and what it got."""

    method: str
    account: str | None
    service: str | None
    scopes: tuple[Scope, ...]
    status: int
    granted: tuple[Scope, ...] = ()


def merge_scopes(scopes: Sequence[Scope]) -> list[Scope]:
    """Union the actions of scopes that name the same resource, keeping first-seen order."""
    merged: dict[tuple[str, str], set[str]] = {}
    for scope in scopes:
        merged.setdefault((scope.type, scope.name), set()).update(scope.actions)
    return [Scope(kind, name, frozenset(actions)) for (kind, name), actions in merged.items()]


class TokenServer:
    """An in-process bearer-token issuer; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        service: str,
        issuer: str,
        signing_key: ec.EllipticCurvePrivateKey,
        cert_chain: Sequence[x509.Certificate],
        users: Mapping[str, str],
        expires_in: int = 300,
        root_bundle: Path | None = None,
    ) -> None:
        """``root_bundle``: where the PEM that a registry's ``rootcertbundle`` names lives."""
        self.service = service
        self.root_bundle = root_bundle
        self.issuer = issuer
        self.expires_in = expires_in
        self._key = signing_key
        self._x5c = [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
            for c in cert_chain
        ]
        self._users = dict(users)
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> TokenServer:
        server = self

        class Handler(_TokenHandler):
            token_server = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="test-token-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests look at ----------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("token server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The realm: the URL the registry's Bearer challenge points at."""
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    @contextlib.contextmanager
    def lifetime(self, expires_in: int) -> Iterator[None]:
        """Issue tokens valid for ``expires_in`` seconds inside the block.

        Note that distribution 2.8 accepts tokens up to 60 s past ``exp`` (clock-skew
        leeway), so a short lifetime changes what clients cache, not what the registry
        accepts.
        """
        previous, self.expires_in = self.expires_in, expires_in
        try:
            yield
        finally:
            self.expires_in = previous

    # -- issuing ---------------------------------------------------------------------
    def grant(self, account: str | None, scopes: Sequence[Scope]) -> list[Scope]:
        """The subset of ``scopes`` that ``account`` (None: anonymous) may have."""
        granted = []
        for scope in merge_scopes(scopes):
            if scope.type == "repository":
                allowed = USER_ACTIONS if account else ANONYMOUS_ACTIONS
            elif scope.type == "registry" and scope.name == "catalog" and account:
                allowed = frozenset({"*"})
            else:
                allowed = frozenset()
            actions = scope.actions & allowed
            if actions:
                granted.append(Scope(scope.type, scope.name, actions))
        return granted

    def issue_token(
        self,
        account: str | None,
        access: Sequence[Scope],
        *,
        service: str | None = None,
        expires_in: int | None = None,
        now: float | None = None,
    ) -> str:
        """Sign a token exactly as the endpoint would; tests use ``now`` to forge expired ones."""
        issued = int(time.time() if now is None else now)
        lifetime = self.expires_in if expires_in is None else expires_in
        claims = {
            "iss": self.issuer,
            "sub": account or "",
            "aud": service or self.service,
            "exp": issued + lifetime,
            "nbf": issued,
            "iat": issued,
            "jti": secrets.token_hex(16),
            "access": [scope.claim() for scope in access],
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def authenticate(self, username: str, password: str) -> bool:
        expected = self._users.get(username)
        return expected is not None and secrets.compare_digest(expected, password)


class _TokenHandler(BaseHTTPRequestHandler):
    token_server: TokenServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; tests read ``TokenServer.requests``."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            self._send(404, {"error": "not found"})
            return
        params = parse_qs(url.query, keep_blank_values=True)
        authenticated, account = self._basic_credentials()
        if not authenticated:
            self._refuse("GET", account)
            return
        self._answer("GET", account, params)

    def do_POST(self) -> None:
        """The OAuth2 password grant (``docker login`` with ``oauth`` servers uses it)."""
        if urlsplit(self.path).path != "/token":
            self._send(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        params = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
        if params.get("grant_type", [""])[0] != "password":
            self._send(400, {"error": "unsupported_grant_type"})
            return
        username = params.get("username", [""])[0]
        if not self.token_server.authenticate(username, params.get("password", [""])[0]):
            self._refuse("POST", username)
            return
        self._answer("POST", username, params)

    def _basic_credentials(self) -> tuple[bool, str | None]:
        """(credentials accepted, account); no Authorization header is anonymous and accepted."""
        header = self.headers.get("Authorization")
        if not header:
            return True, None
        kind, _, value = header.partition(" ")
        try:
            username, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            username, password = "", ""
        if kind.lower() != "basic" or not self.token_server.authenticate(username, password):
            return False, username or None
        return True, username

    def _refuse(self, method: str, account: str | None) -> None:
        self.token_server._record(TokenRequest(method, account, None, (), 401))
        self._send(
            401,
            {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]},
            {"WWW-Authenticate": 'Basic realm="test-token-server"'},
        )

    def _answer(self, method: str, account: str | None, params: dict[str, list[str]]) -> None:
        server = self.token_server
        service = params.get("service", [None])[0]
        try:
            # A client may repeat ``scope`` or put several space-separated scopes in one.
            scopes = tuple(
                Scope.parse(item) for value in params.get("scope", []) for item in value.split()
            )
        except ValueError as exc:
            server._record(TokenRequest(method, account, service, (), 400))
            self._send(400, {"error": "invalid_scope", "detail": str(exc)})
            return
        if service is not None and service != server.service:
            server._record(TokenRequest(method, account, service, scopes, 400))
            self._send(400, {"error": "invalid_request", "detail": f"unknown service {service!r}"})
            return
        granted = server.grant(account, scopes)
        expires_in = server.expires_in
        token = server.issue_token(account, granted, service=service, expires_in=expires_in)
        server._record(TokenRequest(method, account, service, scopes, 200, tuple(granted)))
        issued_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._send(
            200,
            {
                "token": token,
                "access_token": token,
                "expires_in": expires_in,
                "issued_at": issued_at,
            },
        )

    def _send(self, status: int, body: object, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
