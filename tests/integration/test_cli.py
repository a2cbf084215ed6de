"""The appliance-release CLI end to end against the token-auth registry: keygen,
publish (with the real daemonless control-plane build), promote, history, resolve,
verify, control-plane-image, and the exit codes of refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from consumer.cli import main
from ocicore.client import RegistryClient
from ocicore.credentials import Credentials
from tests.support.releases import ROOT, push_app_images, repo_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's release definition with the registry namespace 'cli'."""
    work = tmp_path_factory.mktemp("cli")
    text = (ROOT / "release.toml").read_text().replace('namespace = "alga"', 'namespace = "cli"')
    text = text.replace('"alga/', '"cli/')
    (work / "release.toml").write_text(text)
    for name in ("charts", "flux", "control_plane", "ocicore", "consumer"):
        (work / name).symlink_to(ROOT / name)
    (work / ".tools").symlink_to(ROOT / ".tools")
    return work


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def env(registry_token: object, monkeypatch: pytest.MonkeyPatch, workspace: Path) -> str:
    monkeypatch.setenv("APPLIANCE_RELEASE_USERNAME", registry_token.username)  # type: ignore[attr-defined]
    monkeypatch.setenv("APPLIANCE_RELEASE_PASSWORD", registry_token.password)  # type: ignore[attr-defined]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.chdir(workspace)
    return registry_token.host  # type: ignore[attr-defined]


def test_cli_journey(
    env: str, workspace: Path, capsys: pytest.CaptureFixture[str], registry_token: object
) -> None:
    host = env
    code, out, _ = run(capsys, "--output", "json", "keygen", "--out-dir", "keys")
    assert code == 0 and json.loads(out)["keyid"]
    creds = Credentials(registry_token.username, registry_token.password, source="t")  # type: ignore[attr-defined]
    config = repo_config()
    config = config.model_copy(
        update={
            "images": {
                k: config.image(k).model_copy(
                    update={"repository": config.image(k).repository.replace("alga/", "cli/", 1)}
                )
                for k in config.images
            }
        }
    )
    with RegistryClient(host, credentials=creds) as client:
        push_app_images(client, config, "1.0.0")
        push_app_images(client, config, "1.1.0")
    common = ["--registry", host]
    code, out, err = run(capsys, *common, "publish", "--version", "1.0.0", "--no-lint")
    assert code == 0, err
    assert "release 1.0.0 is sha256:" in out
    code, out, err = run(
        capsys,
        *common,
        "--output",
        "json",
        "publish",
        "--version",
        "1.1.0",
        "--channel",
        "nightly",
        "--no-lint",
    )
    assert code == 0, err
    published = json.loads(out)
    assert published["channel"] == "nightly"
    code, _, err = run(capsys, *common, "promote", "1.0.0", "stable", "--settle", "0.05")
    assert code == 0, err
    code, _, err = run(capsys, *common, "promote", "1.1.0", "stable", "--settle", "0.05")
    assert code == 0, err
    code, out, _ = run(capsys, *common, "history", "stable")
    assert code == 0 and "(none) -> 1.0.0" in out and "1.0.0 -> 1.1.0" in out
    code, out, err = run(capsys, *common, "promote", "1.0.0", "stable", "--settle", "0.05")
    assert code == 8 and "downgrade" in err and out == ""
    consumer = ["--repository", "cli/appliance-release", "--trust", "keys/release.pub"]
    code, out, err = run(
        capsys, *common, "--output", "json", "resolve", "stable", *consumer, "--state", "state.json"
    )
    assert code == 0, err
    resolved = json.loads(out)
    assert resolved["version"] == "1.1.0" and resolved["digest"] == published["digest"]
    code, out, err = run(capsys, *common, "verify", "stable", *consumer)
    assert code == 0, err
    assert "artifacts verified" in out and "control-plane image" in out
    code, out, err = run(capsys, *common, "control-plane-image", "stable", *consumer)
    assert code == 0, err
    assert out.strip().startswith(f"{host}/cli/appliance-control-plane@sha256:")
    # refusals: untrusted key, missing trust file, unknown channel
    shutil.copy(workspace / "keys" / "release.pub", workspace / "keys" / "copy.pub")
    run(capsys, "keygen", "--out-dir", "other")
    code, _, err = run(
        capsys,
        *common,
        "resolve",
        "stable",
        "--repository",
        "cli/appliance-release",
        "--trust",
        "other/release.pub",
    )
    assert code == 5 and err.startswith("error: ") and err.count("\n") == 1
    code, _, err = run(
        capsys,
        *common,
        "resolve",
        "stable",
        "--repository",
        "cli/appliance-release",
        "--trust",
        "missing.pem",
    )
    assert code == 2 and "cannot read the trust file" in err
    code, _, err = run(capsys, *common, "resolve", "beta", *consumer)
    assert code == 3 and "not found" in err
