"""Where registry credentials come from.

Lookup order for a registry host (the first that yields credentials wins, and the
source, never the secret, is logged at debug level):

1. The environment: ``APPLIANCE_RELEASE_USERNAME`` and ``APPLIANCE_RELEASE_PASSWORD``
   (both set). When ``APPLIANCE_RELEASE_REGISTRY`` is also set, they apply only to
   that host; otherwise to every registry the command talks to.
2. The Docker config file: ``--docker-config``, else ``$DOCKER_CONFIG/config.json``,
   else ``~/.docker/config.json``; within it, as the docker CLI does:
   ``credHelpers[host]`` (runs ``docker-credential-<helper> get``), then ``credsStore``,
   then the inline ``auths[host]`` entry (``auth`` = base64 ``user:password``, or
   ``username``/``password``, or ``identitytoken``).
3. Anonymous.

Hosts in ``auths`` are matched after stripping a scheme and path, and Docker Hub's
``https://index.docker.io/v1/`` key matches ``docker.io``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ocicore.errors import AuthenticationError, InvalidInputError

log = logging.getLogger(__name__)

ENV_USERNAME = "APPLIANCE_RELEASE_USERNAME"
ENV_PASSWORD = "APPLIANCE_RELEASE_PASSWORD"  # noqa: S105 (a variable name)
ENV_REGISTRY = "APPLIANCE_RELEASE_REGISTRY"
_HUB_KEYS = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_HELPER_TIMEOUT_S = 30


@dataclass(frozen=True)
class Credentials:
    """A username/password pair or an identity (refresh) token, and where it came from."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)
    source: str = ""


class DockerConfigError(InvalidInputError):
    """The Docker config file exists but cannot be used."""


def _normalise_host(key: str) -> str:
    host = key
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    return "docker.io" if host in _HUB_KEYS else host


def docker_config_path(explicit: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The Docker config file that would be read."""
    env = os.environ if env is None else env
    if explicit is not None:
        return explicit / "config.json" if explicit.is_dir() else explicit
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path.home() / ".docker" / "config.json"


def lookup_credentials(
    registry: str,
    *,
    docker_config: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials | None:
    """Credentials for ``registry`` per the module's lookup order, or ``None`` (anonymous).

    Raises ``DockerConfigError`` for an unreadable config file and
    ``AuthenticationError`` when a configured credential helper fails.
    """
    env = os.environ if env is None else env
    host = _normalise_host(registry)
    user, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
    scoped = env.get(ENV_REGISTRY)
    if user and password and (not scoped or _normalise_host(scoped) == host):
        log.debug("credentials for %s: from the environment (%s)", host, ENV_USERNAME)
        return Credentials(user, password, source="environment")
    path = docker_config_path(docker_config, env)
    if not path.is_file():
        log.debug("credentials for %s: none (no %s); anonymous", host, path)
        return None
    config = _read_config(path)
    helpers = config.get("credHelpers")
    helpers = helpers if isinstance(helpers, dict) else {}
    helper = next((v for k, v in helpers.items() if _normalise_host(k) == host), None)
    if isinstance(helper, str) and helper:
        creds = _from_helper(helper, registry, host)
        if creds is not None:
            return creds
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        creds = _from_helper(store, registry, host)
        if creds is not None:
            return creds
    auths = config.get("auths")
    auths = auths if isinstance(auths, dict) else {}
    entry = next((v for k, v in auths.items() if _normalise_host(k) == host), None)
    if isinstance(entry, dict):
        creds = _from_auth_entry(entry, path, host)
        if creds is not None:
            return creds
    log.debug("credentials for %s: none in %s; anonymous", host, path)
    return None


def _read_config(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DockerConfigError(
            f"cannot read the Docker config {path}: {exc}",
            hint="fix or remove the file, or point --docker-config at another one",
        ) from None
    if not isinstance(data, dict):
        raise DockerConfigError(f"the Docker config {path} is not a JSON object")
    return data


def _from_auth_entry(entry: dict[str, object], path: Path, host: str) -> Credentials | None:
    source = f"{path} auths"
    token = entry.get("identitytoken")
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise DockerConfigError(
                f"the auths entry for {host} in {path} is not base64 'user:password'",
                hint=f"run 'docker login {host}' again",
            ) from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise DockerConfigError(f"the auths entry for {host} in {path} has no ':'")
        log.debug("credentials for %s: from %s", host, source)
        return Credentials(user, password, token if isinstance(token, str) else None, source)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        log.debug("credentials for %s: from %s", host, source)
        return Credentials(name, secret, source=source)
    if isinstance(token, str) and token:
        log.debug("credentials for %s: identity token from %s", host, source)
        return Credentials(identity_token=token, source=source)
    return None


def _from_helper(helper: str, registry: str, host: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    server = "https://index.docker.io/v1/" if host == "docker.io" else registry
    try:
        proc = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise AuthenticationError(
            f"the Docker config names credential helper {helper!r} but {program} is not on PATH",
            hint=f"install {program} or remove it from the Docker config",
        ) from None
    except subprocess.TimeoutExpired:
        raise AuthenticationError(
            f"credential helper {program} did not answer within {_HELPER_TIMEOUT_S}s"
        ) from None
    if proc.returncode != 0:
        message = proc.stdout.decode(errors="replace").strip()
        if "credentials not found" in message.lower():
            log.debug("credentials for %s: helper %s has none", host, program)
            return None
        raise AuthenticationError(
            f"credential helper {program} failed for {host} (exit {proc.returncode})",
            hint=f"run '{program} get' by hand to see why, or 'docker login {host}'",
        )
    try:
        answer = json.loads(proc.stdout)
        user, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise AuthenticationError(
            f"credential helper {program} returned something that is not its JSON answer"
        ) from None
    log.debug("credentials for %s: from credential helper %s", host, program)
    if user == "<token>":
        return Credentials(identity_token=secret, source=program)
    return Credentials(user, secret, source=program)
