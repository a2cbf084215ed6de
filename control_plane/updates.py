"""Updates through the control plane: check the channel, and apply a newer release.

``Updater.check()`` resolves the configured channel (signature binding, anti-rollback;
a warm check of an unchanged channel costs one request) and compares it with what the
state file says is installed. ``Updater.apply()`` resolves, verifies every pinned
artifact, plans the install with the site settings and applies it to the cluster by
server-side apply (``consumer.kube``), then records the release in the state file. One
update runs at a time; a second one meanwhile is refused (409).

Settings (environment): ``CONTROL_PLANE_REGISTRY``, ``CONTROL_PLANE_REPOSITORY``,
``CONTROL_PLANE_CHANNEL`` (default ``stable``), ``CONTROL_PLANE_TRUST_FILE``,
``CONTROL_PLANE_SITE_FILE``, ``CONTROL_PLANE_TOKEN_FILE`` (the bearer token mutating
calls must present; without it, mutating calls are refused), ``CONTROL_PLANE_PLAIN_HTTP``
(``1`` for a plain-HTTP registry) and ``CONTROL_PLANE_CA_FILE``.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.kube import InCluster, apply_in_cluster
from consumer.plan import plan_install
from consumer.resolve import Resolver
from consumer.signatures import SignatureError, TrustStore
from consumer.site import read_site
from consumer.state import RollbackError, load_state
from consumer.verify import verify_release
from ocicore.client import RegistryClient
from ocicore.errors import IntegrityError, InvalidInputError, RegistryError, ToolkitError
from ocicore.pool import ClientPool

Response = tuple[int, dict[str, Any]]


class UpdateSettingsError(InvalidInputError):
    """The update settings in the environment are incomplete or invalid."""


@dataclass(frozen=True)
class UpdateSettings:
    registry: str
    repository: str
    channel: str
    trust_file: Path
    site_file: Path
    token_file: Path | None
    plain_http: bool | None
    ca_file: Path | None

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> UpdateSettings | None:
        """``None`` when no registry is configured (updates disabled); raises
        ``UpdateSettingsError`` naming a missing variable otherwise."""
        registry = env.get("CONTROL_PLANE_REGISTRY", "")
        if not registry:
            return None
        missing = [name for name in ("CONTROL_PLANE_REPOSITORY", "CONTROL_PLANE_TRUST_FILE",
                                     "CONTROL_PLANE_SITE_FILE") if not env.get(name)]
        if missing:
            raise UpdateSettingsError(f"{missing[0]} is not set (CONTROL_PLANE_REGISTRY is)",
                                      hint="set it, or unset CONTROL_PLANE_REGISTRY")
        token = env.get("CONTROL_PLANE_TOKEN_FILE", "")
        ca = env.get("CONTROL_PLANE_CA_FILE", "")
        return cls(registry, env["CONTROL_PLANE_REPOSITORY"],
                   env.get("CONTROL_PLANE_CHANNEL", "") or "stable",
                   Path(env["CONTROL_PLANE_TRUST_FILE"]), Path(env["CONTROL_PLANE_SITE_FILE"]),
                   Path(token) if token else None,
                   True if env.get("CONTROL_PLANE_PLAIN_HTTP") == "1" else None,
                   Path(ca) if ca else None)


def _error(status: int, exc: ToolkitError) -> Response:
    return status, {"error": exc.message, "hint": exc.hint}


def status_for(exc: ToolkitError) -> int:
    """HTTP status for a refused update: 409 for rollback, 422 for untrusted or
    inconsistent content, 502 for the registry, 400 otherwise."""
    if isinstance(exc, RollbackError):
        return 409
    if isinstance(exc, SignatureError | IntegrityError):
        return 422
    if isinstance(exc, RegistryError):
        return 502
    return 400


class Updater:
    """Checks and applies updates of one channel; thread-safe."""

    def __init__(self, settings: UpdateSettings, state_file: Path, *,
                 cluster: Callable[[], InCluster] = InCluster.from_environ) -> None:
        self.settings = settings
        self.state_file = state_file
        self._cluster = cluster
        self._client = RegistryClient(settings.registry, plain_http=settings.plain_http,
                                      ca_file=settings.ca_file)
        trust = TrustStore.from_pem(settings.trust_file.read_bytes(),
                                    what=f"trust file {settings.trust_file}")
        self._resolver = Resolver(self._client, settings.repository, trust,
                                  state_path=state_file)
        self._busy = threading.Lock()

    def authorised(self, authorization: str | None) -> Response | None:
        """``None`` when the bearer token matches, else the refusal to send."""
        if self.settings.token_file is None:
            return 403, {"error": "mutating calls are disabled: no token is configured",
                         "hint": "set CONTROL_PLANE_TOKEN_FILE"}
        try:
            expected = self.settings.token_file.read_text().strip()
        except OSError as exc:
            return 500, {"error": f"cannot read the token file: {exc.strerror}"}
        offered = (authorization or "").removeprefix("Bearer ").strip()
        if not expected or not hmac.compare_digest(offered.encode(), expected.encode()):
            return 401, {"error": "missing or wrong bearer token"}
        return None

    def check(self) -> Response:
        try:
            resolved = self._resolver.resolve_channel(self.settings.channel)
            installed = load_state(self.state_file).channels.get(self.settings.channel)
        except ToolkitError as exc:
            return _error(status_for(exc), exc)
        current = installed.model_dump(mode="json", by_alias=True) if installed else None
        return 200, {
            "channel": self.settings.channel,
            "installed": current,
            "available": {"version": resolved.manifest.version, "digest": str(resolved.digest),
                          "sequence": resolved.manifest.sequence},
            "updateAvailable": installed is None or installed.digest != resolved.digest,
        }

    def apply(self) -> Response:
        if not self._busy.acquire(blocking=False):
            return 409, {"error": "an update is already running"}
        try:
            resolved = self._resolver.resolve_channel(self.settings.channel)
            verify_release(resolved, ClientPool(lambda host: self._client, self._client))
            site = read_site(self.settings.site_file.read_bytes(),
                             what=f"site settings {self.settings.site_file}")
            plan = plan_install(resolved, site)
            applied = apply_in_cluster(plan, self._cluster())
            self._resolver.record_installed(resolved)
        except ToolkitError as exc:
            return _error(status_for(exc), exc)
        except OSError as exc:
            return 500, {"error": f"cannot read a settings file: {exc}"}
        finally:
            self._busy.release()
        return 200, {"installed": {"version": resolved.manifest.version,
                                   "digest": str(resolved.digest)}, "applied": applied}
