"""One registry host over HTTP: scheme choice, retries, and status-to-error mapping."""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ocicore.auth import safe_url
from ocicore.config import ClientConfig
from ocicore.errors import (
    AuthenticationError,
    AuthorizationError,
    NotFoundError,
    RegistryError,
    TransportError,
    UnsupportedError,
)

log = logging.getLogger("ocicore.http")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_PLAIN_HTTP_SIGNS = ("wrong version number", "wrong_version_number", "record layer failure",
                     "packet length too long", "unknown protocol", "http request")
_CERT_SIGNS = ("certificate verify failed", "certificate_verify_failed", "self-signed",
               "self signed", "unable to get local issuer")


@dataclass
class Stats:
    """Counters of what a client did; tests and benchmarks read them."""

    requests: int = 0
    retries: int = 0
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0
    blobs_uploaded: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name[:port]`` or ``[v6][:port]``) is this machine."""
    name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def oci_error_codes(response: httpx.Response) -> tuple[tuple[str, ...], str]:
    """The OCI ``errors[].code`` values and the first message of an error response."""
    try:
        body: Any = response.json()
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        return (), ""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return (), ""
    codes = tuple(str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code"))
    first = next((e.get("message") for e in errors if isinstance(e, dict)), "") or ""
    return codes, str(first)


class RegistryHTTP:
    """Sends requests to one registry host with the retry policy and error mapping."""

    def __init__(
        self,
        host: str,
        http: httpx.Client,
        auth: httpx.Auth,
        config: ClientConfig,
        *,
        plain_http: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.host = host
        self.http = http
        self.auth = auth
        self.config = config
        self.stats = Stats()
        self._sleep = sleep
        self._explicit_scheme = plain_http is not None
        self._scheme = "http" if plain_http else "https"

    @property
    def base_url(self) -> str:
        return f"{self._scheme}://{self.host}"

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        ok: Iterable[int] = (200,),
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | Callable[[], Any] | None = None,
        idempotent: bool = True,
        stream: bool = False,
        not_found: type[RegistryError] = NotFoundError,
    ) -> httpx.Response:
        """Send a request, retrying when safe, and return a response whose status is in ``ok``.

        ``content`` may be a callable returning a fresh body (an iterator) for each attempt.
        Raises the ``RegistryError`` subclass matching the failure.
        """
        ok_set = set(ok)
        attempts = self.config.retry.max_attempts if idempotent else 1
        last: str = ""
        for attempt in range(1, attempts + 1):
            body = content() if callable(content) else content
            request = self.http.build_request(
                method, self.url(path), headers=dict(headers or {}), params=params, content=body
            )
            self.stats.add(requests=1)
            try:
                response = self.http.send(request, auth=self.auth, stream=stream)
            except httpx.TransportError as exc:
                if self._switch_to_plain_http(exc):
                    return self.send(method, path, what=what, ok=ok, headers=headers,
                                     params=params, content=content, idempotent=idempotent,
                                     stream=stream, not_found=not_found)
                last = self._describe_transport_error(exc)
                fatal = self._transport_error_is_fatal(exc)
                if fatal is not None:
                    raise fatal from None
                if attempt < attempts:
                    self.backoff(attempt, f"{method} {safe_url(str(request.url))}", last)
                    continue
                raise TransportError(
                    f"{what}: {method} {safe_url(str(request.url))} failed after "
                    f"{attempt} attempt(s): {last}",
                    hint="check that the registry is reachable (network, proxy, DNS) and retry",
                    method=method,
                    url=safe_url(str(request.url)),
                ) from None
            if response.status_code in ok_set:
                return response
            if response.status_code in RETRYABLE_STATUS and attempt < attempts:
                retry_after = _retry_after(response)
                response.close()
                self.backoff(attempt, f"{method} {safe_url(str(request.url))}",
                             f"HTTP {response.status_code}", retry_after)
                continue
            if stream:
                response.read()
            raise self._error(response, what, not_found, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def backoff(self, attempt: int, what: str, reason: str,
                retry_after: float | None = None) -> None:
        """Count a retry and sleep per the policy before attempt ``attempt + 1``."""
        delay = self.config.retry.delay(attempt, retry_after)
        self.stats.add(retries=1)
        log.info("retrying %s in %.2fs after %s", what, delay, reason)
        self._sleep(delay)

    def _switch_to_plain_http(self, exc: httpx.TransportError) -> bool:
        if self._explicit_scheme or self._scheme != "https" or not is_loopback(self.host):
            return False
        if not any(sign in str(exc).lower() for sign in _PLAIN_HTTP_SIGNS):
            return False
        log.info("%s speaks plain HTTP; using http:// for this loopback registry", self.host)
        self._scheme = "http"
        self._explicit_scheme = True
        return True

    def _describe_transport_error(self, exc: httpx.TransportError) -> str:
        text = str(exc) or type(exc).__name__
        return f"{type(exc).__name__}: {text}"

    def _transport_error_is_fatal(self, exc: httpx.TransportError) -> RegistryError | None:
        text = str(exc).lower()
        if self._scheme == "https" and any(sign in text for sign in _PLAIN_HTTP_SIGNS):
            return TransportError(
                f"the registry at {self.host} speaks plain HTTP, not HTTPS",
                hint="pass --plain-http if that is intended (traffic is then unencrypted)",
                url=self.base_url,
            )
        if "name or service not known" in text or "nodename nor servname" in text:
            return TransportError(
                f"the registry host {self.host} does not resolve (DNS)",
                hint="check the registry name (--registry) and the machine's DNS settings",
                url=self.base_url,
            )
        if any(sign in text for sign in _CERT_SIGNS):
            return TransportError(
                f"the TLS certificate of {self.host} is not trusted ({exc})",
                hint="pass --ca-file with the CA bundle that signed the registry's certificate",
                url=self.base_url,
            )
        return None

    def _error(self, response: httpx.Response, what: str, not_found: type[RegistryError],
               attempts: int) -> RegistryError:
        status = response.status_code
        method = response.request.method
        url = safe_url(str(response.request.url))
        codes, detail = oci_error_codes(response)
        suffix = f" ({', '.join(codes)}: {detail})" if codes else ""

        def make(cls: type[RegistryError], message: str, hint: str) -> RegistryError:
            return cls(message, hint=hint, method=method, url=url, status=status, codes=codes)

        if status == 401:
            return make(
                AuthenticationError,
                f"{what}: the registry {self.host} requires authentication (401){suffix}",
                f"log in with 'docker login {self.host}' or set "
                "APPLIANCE_RELEASE_USERNAME and APPLIANCE_RELEASE_PASSWORD",
            )
        if status == 403:
            return make(
                AuthorizationError,
                f"{what}: access denied by {self.host} (403){suffix}",
                "the credentials are valid but lack this permission on the repository",
            )
        if status == 404:
            return make(not_found, f"{what}: not found on {self.host}{suffix}",
                        "check the repository, tag or digest")
        if status == 405:
            return make(
                UnsupportedError,
                f"{what}: {method} is not supported or disabled by {self.host}{suffix}",
                "the registry does not allow this operation (for deletes: enable "
                "storage.delete on the registry)",
            )
        if status == 400 and self._scheme == "http" and b"https" in response.content.lower():
            return make(TransportError,
                        f"the registry at {self.host} speaks HTTPS, not plain HTTP",
                        "drop --plain-http")
        if status in RETRYABLE_STATUS:
            return make(
                TransportError,
                f"{what}: {self.host} answered {status} {response.reason_phrase} "
                f"after {attempts} attempt(s){suffix}",
                "the registry is overloaded or failing; retry later",
            )
        return make(
            RegistryError,
            f"{what}: {self.host} answered {status} {response.reason_phrase}{suffix}",
            "see the registry's message; run with --debug for the request log",
        )
