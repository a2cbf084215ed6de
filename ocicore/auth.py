"""Registry authentication as an ``httpx.Auth`` flow.

The flow answers the registry's ``WWW-Authenticate`` challenge; nothing about the
token endpoint is hard-coded. For ``Bearer`` it asks the challenge's realm for a
token covering the scopes the request needs (derived from its method and path,
merged with the challenge's own scope; a cross-repository mount adds ``pull`` on
the source repository), anonymously or with credentials, and caches the token per
scope set until it expires, so later requests send it up front and cost one round
trip. For ``Basic`` it sends the credentials and remembers that the host wants
them. Secrets never reach logs or error messages.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx

from ocicore.credentials import Credentials
from ocicore.errors import AuthenticationError, TransportError

log = logging.getLogger(__name__)

#: Tokens are treated as expired this many seconds early, against clock skew.
_EXPIRY_MARGIN_S = 10.0
#: The distribution spec's default when a token response has no ``expires_in``.
_DEFAULT_TOKEN_TTL_S = 60.0
_MAX_TOKEN_RESPONSE = 1024 * 1024
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
# The endpoint shapes after the name are fixed, so a repository or tag that happens to be
# called "manifests" or "tags" cannot confuse the split.
_API_PATH = re.compile(
    r"^/v2/(?P<name>.+)/(?:manifests/[^/]+|blobs/uploads/[^/]*|blobs/[^/]+|tags/list"
    r"|referrers/[^/]+)$"
)


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="…",service="…",scope="…"`` (or ``Basic realm="…"``)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        params[match.group(1).lower()] = quoted.replace('\\"', '"') if quoted is not None else bare
    return Challenge(scheme.lower(), params)


Scopes = frozenset[str]


def _merge_scopes(*groups: str | Scopes) -> Scopes:
    """Union of scope strings, merging actions per resource (``repository:a:pull,push``)."""
    actions: dict[str, set[str]] = {}
    for group in groups:
        items = group.split() if isinstance(group, str) else group
        for item in items:
            resource, sep, acts = item.rpartition(":")
            if not sep or not resource:
                continue
            actions.setdefault(resource, set()).update(a for a in acts.split(",") if a)
    return frozenset(f"{res}:{','.join(sorted(acts))}" for res, acts in actions.items())


def scopes_for(request: httpx.Request) -> Scopes:
    """The token scopes a registry API request needs, from its method and path."""
    path = request.url.path
    if path.startswith("/v2/_catalog"):
        return frozenset({"registry:catalog:*"})
    match = _API_PATH.match(path)
    if match is None:
        return frozenset()
    name = match.group("name")
    method = request.method.upper()
    if method in ("GET", "HEAD"):
        action = "pull"
    elif method == "DELETE":
        action = "delete"
    else:
        action = "pull,push"
    scopes = [f"repository:{name}:{action}"]
    source = parse_qs(request.url.query.decode()).get("from")
    if source:
        scopes.append(f"repository:{source[0]}:pull")
    return _merge_scopes(" ".join(scopes))


def _covers(have: Scopes, need: Scopes) -> bool:
    granted = {res: set(acts.split(",")) for res, _, acts in (s.rpartition(":") for s in have)}
    for item in need:
        res, _, acts = item.rpartition(":")
        if not set(acts.split(",")) <= granted.get(res, set()):
            return False
    return True


@dataclass
class _Token:
    value: str
    scopes: Scopes
    expires_at: float


class RegistryAuth(httpx.Auth):
    """The challenge-answering auth flow for one registry host.

    ``credentials`` may be ``None`` (anonymous). Thread-safe: one instance is shared
    by every request of a ``RegistryClient``.
    """

    # Not ``requires_response_body``: httpx would then read every response in full,
    # blob downloads included, defeating streaming. Only token responses are read.
    requires_response_body = False

    def __init__(
        self, credentials: Credentials | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._scheme: str | None = None
        self._bearer: tuple[str, str] | None = None  # realm, service of the last challenge
        self._tokens: list[_Token] = []
        self.token_requests = 0

    def _cached_header(self, need: Scopes) -> str | None:
        with self._lock:
            if self._scheme == "basic":
                return self._basic_header()
            if self._scheme != "bearer":
                return None
            now = self._clock()
            self._tokens = [t for t in self._tokens if t.expires_at > now]
            for token in self._tokens:
                if _covers(token.scopes, need):
                    return f"Bearer {token.value}"
        return None

    def _basic_header(self) -> str | None:
        creds = self._credentials
        if creds is None or creds.username is None or creds.password is None:
            return None
        return basic_header(creds.username, creds.password)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        need = scopes_for(request)
        header = self._cached_header(need)
        if header is not None:
            request.headers["Authorization"] = header
        response = yield request
        if response.status_code != 401:
            return
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            return
        if challenge.scheme == "basic":
            basic = self._basic_header()
            if basic is None or request.headers.get("Authorization") == basic:
                return  # nothing (new) to offer; the caller turns the 401 into an error
            with self._lock:
                self._scheme = "basic"
            request.headers["Authorization"] = basic
            yield request
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return
        scopes = _merge_scopes(need, challenge.params.get("scope", ""))
        realm = challenge.params["realm"]
        service = challenge.params.get("service", "")
        token_response = yield self._token_request(realm, service, scopes)
        token = self._parse_token(token_response, _read_capped(token_response), realm, scopes)
        with self._lock:
            self._scheme = "bearer"
            self._bearer = (realm, service)
            self._tokens.append(token)
        request.headers["Authorization"] = f"Bearer {token.value}"
        yield request

    def _token_request(self, realm: str, service: str, scopes: Scopes) -> httpx.Request:
        self.token_requests += 1
        creds = self._credentials
        params: list[tuple[str, str | int | float | bool | None]] = []
        if service:
            params.append(("service", service))
        params.extend(("scope", s) for s in sorted(scopes))
        if creds is not None and creds.identity_token:
            # OAuth2 refresh-token grant, as docker does for identity tokens.
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": service,
                "scope": " ".join(sorted(scopes)),
                "client_id": "appliance-release",
            }
            return httpx.Request("POST", realm, data=form)
        request = httpx.Request("GET", realm, params=httpx.QueryParams(params))
        if creds is not None and creds.username is not None and creds.password is not None:
            request.headers["Authorization"] = basic_header(creds.username, creds.password)
        log.debug("requesting a token from %s for %s", _safe_url(realm), " ".join(sorted(scopes)))
        return request

    def _parse_token(self, response: httpx.Response, body_bytes: bytes | None, realm: str,
                     scopes: Scopes) -> _Token:
        where = _safe_url(realm)
        if response.status_code in (401, 403):
            who = "anonymous access" if self._credentials is None else (
                f"the credentials from {self._credentials.source}"
            )
            raise AuthenticationError(
                f"the token server {where} refused {who} ({response.status_code})",
                hint="check the username and password (docker login, or "
                "APPLIANCE_RELEASE_USERNAME/APPLIANCE_RELEASE_PASSWORD)",
                method=response.request.method,
                url=where,
                status=response.status_code,
            )
        if body_bytes is None:
            raise TransportError(
                f"the token server {where} sent more than {_MAX_TOKEN_RESPONSE} bytes",
                hint="the realm in the registry's challenge does not look like a token service",
                url=where,
            )
        if response.status_code != 200:
            raise TransportError(
                f"the token server {where} answered {response.status_code}",
                hint="the registry's auth service is failing; retry later",
                url=where,
                status=response.status_code,
            )
        try:
            body = json.loads(body_bytes)
            value = body.get("token") or body.get("access_token")
            ttl = float(body.get("expires_in") or _DEFAULT_TOKEN_TTL_S)
        except (ValueError, AttributeError, TypeError):
            value, ttl = None, 0.0
        if not isinstance(value, str) or not value:
            raise TransportError(
                f"the token server {where} answered without a token",
                hint="the realm in the registry's challenge does not look like a token service",
                url=where,
            )
        expires_at = self._clock() + max(0.0, ttl - _EXPIRY_MARGIN_S)
        return _Token(value, scopes, expires_at)


def _read_capped(response: httpx.Response) -> bytes | None:
    """The token response's body, or ``None`` when it is over ``_MAX_TOKEN_RESPONSE``:
    a declared length over the cap is refused before reading. (httpx reads the body
    itself before the flow's next request, so it is read whole here, not streamed.)"""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > _MAX_TOKEN_RESPONSE:
        return None
    body = response.read()
    return body if len(body) <= _MAX_TOKEN_RESPONSE else None


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` value for HTTP basic auth."""
    pair = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {pair}"


def _safe_url(url: str) -> str:
    """``url`` without userinfo or query string, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


safe_url = _safe_url
