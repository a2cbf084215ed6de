"""Credential lookup order, Docker config forms, credential helpers, and scope derivation."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from ocicore.auth import parse_challenge, scopes_for
from ocicore.credentials import DockerConfigError, lookup_credentials
from ocicore.errors import AuthenticationError


def _write_config(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def _helper(bindir: Path, name: str, body: str) -> None:
    script = bindir / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\nread server\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_environment_wins_and_can_be_scoped(tmp_path: Path) -> None:
    cfg = _write_config(
        tmp_path, {"auths": {"reg.example": {"auth": base64.b64encode(b"u:p").decode()}}}
    )
    env = {"APPLIANCE_RELEASE_USERNAME": "envuser", "APPLIANCE_RELEASE_PASSWORD": "envpass"}
    creds = lookup_credentials("reg.example", docker_config=cfg, env=env)
    assert creds is not None and creds.username == "envuser" and creds.source == "environment"
    scoped = {**env, "APPLIANCE_RELEASE_REGISTRY": "other.example"}
    creds = lookup_credentials("reg.example", docker_config=cfg, env=scoped)
    assert creds is not None and creds.username == "u"


def test_auths_entry_forms(tmp_path: Path) -> None:
    cfg = _write_config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:secret").decode()},
                "https://reg.example/v2/": {"username": "plain", "password": "pw"},
                "tok.example": {"identitytoken": "refresh"},
            }
        },
    )
    hub = lookup_credentials("docker.io", docker_config=cfg, env={})
    assert hub is not None and (hub.username, hub.password) == ("hub", "secret")
    plain = lookup_credentials("reg.example", docker_config=cfg, env={})
    assert plain is not None and plain.password == "pw"
    tok = lookup_credentials("tok.example", docker_config=cfg, env={})
    assert tok is not None and tok.identity_token == "refresh" and tok.username is None
    assert lookup_credentials("unknown.example", docker_config=cfg, env={}) is None


def test_secrets_do_not_appear_in_repr(tmp_path: Path) -> None:
    cfg = _write_config(
        tmp_path, {"auths": {"r.example": {"username": "u", "password": "hunter2"}}}
    )
    creds = lookup_credentials("r.example", docker_config=cfg, env={})
    assert "hunter2" not in repr(creds)


def test_malformed_config_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(DockerConfigError, match="cannot read the Docker config"):
        lookup_credentials("r.example", docker_config=path, env={})
    _write_config(tmp_path, {"auths": {"r.example": {"auth": "!!notbase64"}}})
    with pytest.raises(DockerConfigError, match="not base64"):
        lookup_credentials("r.example", docker_config=path, env={})


def test_cred_helpers_then_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _helper(bindir, "perhost", 'echo \'{"ServerURL":"x","Username":"hu","Secret":"hs"}\'')
    _helper(bindir, "store", 'echo "credentials not found in native keychain"; exit 1')
    _helper(bindir, "broken", "exit 3")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cfg = _write_config(
        tmp_path,
        {
            "credHelpers": {"a.example": "perhost", "c.example": "broken"},
            "credsStore": "store",
            "auths": {"b.example": {"username": "inline", "password": "x"}},
        },
    )
    a = lookup_credentials("a.example", docker_config=cfg, env={})
    assert a is not None and a.username == "hu" and a.source == "docker-credential-perhost"
    b = lookup_credentials("b.example", docker_config=cfg, env={})
    assert b is not None and b.username == "inline"
    with pytest.raises(AuthenticationError, match="docker-credential-broken failed"):
        lookup_credentials("c.example", docker_config=cfg, env={})
    missing = _write_config(tmp_path, {"credsStore": "nosuchhelper"})
    with pytest.raises(AuthenticationError, match="not on PATH"):
        lookup_credentials("d.example", docker_config=missing, env={})


def test_challenge_parsing() -> None:
    ch = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"'
    )
    assert ch is not None and ch.scheme == "bearer"
    assert ch.params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull,push",
    }
    basic = parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("") is None


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", "https://r/v2/a/b/manifests/1.0", {"repository:a/b:pull"}),
        ("HEAD", "https://r/v2/a/b/blobs/sha256:x", {"repository:a/b:pull"}),
        ("PUT", "https://r/v2/a/b/manifests/1.0", {"repository:a/b:pull,push"}),
        (
            "POST",
            "https://r/v2/a/b/blobs/uploads/?mount=sha256:x&from=c/d",
            {"repository:a/b:pull,push", "repository:c/d:pull"},
        ),
        ("DELETE", "https://r/v2/a/manifests/sha256:x", {"repository:a:delete"}),
        ("GET", "https://r/v2/a/tags/list?n=10", {"repository:a:pull"}),
        ("GET", "https://r/v2/_catalog", {"registry:catalog:*"}),
        ("GET", "https://r/v2/", set()),
        ("GET", "https://r/v2/x/manifests/y/blobs/sha256:z", {"repository:x/manifests/y:pull"}),
        ("GET", "https://r/v2/a/manifests/tags", {"repository:a:pull"}),
        ("GET", "https://r/v2/a/tags/manifests/blobs", {"repository:a/tags:pull"}),
        (
            "PATCH",
            "https://r/v2/a/b/blobs/uploads/1234-uuid?_state=s",
            {"repository:a/b:pull,push"},
        ),
    ],
)
def test_scopes_follow_method_and_path(method: str, url: str, expected: set[str]) -> None:
    assert scopes_for(httpx.Request(method, url)) == frozenset(expected)
