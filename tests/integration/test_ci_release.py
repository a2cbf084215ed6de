"""ci/release.sh against the token-auth registry: nightly publish, then promotion to stable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from ocicore.client import RegistryClient
from ocicore.credentials import Credentials
from publisher.signing import generate_keypair
from tests.support.releases import ROOT, push_app_images, repo_config

pytestmark = pytest.mark.integration


def test_release_script_publishes_nightly_and_promotes_stable(registry_token: object,
                                                               tmp_path: Path) -> None:
    host = registry_token.host  # type: ignore[attr-defined]
    work = tmp_path / "ws"  # this appliance under namespace "ci" (the registry is shared)
    work.mkdir()
    text = (ROOT / "release.toml").read_text().replace('namespace = "alga"', 'namespace = "ci"')
    (work / "release.toml").write_text(text)
    for name in ("charts", "flux", "control_plane", "ocicore", "consumer", ".tools"):
        (work / name).symlink_to(ROOT / name)
    generate_keypair(tmp_path / "release.key", tmp_path / "release.pub", None)
    version = "1.0.0-nightly.7.abc"
    creds = Credentials(registry_token.username, registry_token.password, source="t")  # type: ignore[attr-defined]
    with RegistryClient(host, credentials=creds) as client:
        push_app_images(client, repo_config(), version)
    env = {**os.environ, "APPLIANCE_RELEASE_REGISTRY_URL": host,
           "APPLIANCE_RELEASE_USERNAME": registry_token.username,  # type: ignore[attr-defined]
           "APPLIANCE_RELEASE_PASSWORD": registry_token.password,  # type: ignore[attr-defined]
           "APPLIANCE_RELEASE_SIGNING_KEY": (tmp_path / "release.key").read_text(),
           "APPLIANCE_RELEASE_ACTOR": "ci@test", "SOURCE_DATE_EPOCH": "1700000000",
           "APPLIANCE_RELEASE_CONFIG": str(work / "release.toml")}
    script = str(ROOT / "ci" / "release.sh")
    nightly = subprocess.run([script, "nightly", version], env=env, capture_output=True,
                             text=True, check=False, timeout=600)
    assert nightly.returncode == 0, nightly.stderr
    assert f"nightly -> {version} (moved)" in nightly.stdout
    promoted = subprocess.run([script, "promote", version], env=env, capture_output=True,
                              text=True, check=False, timeout=600)
    assert promoted.returncode == 0, promoted.stderr
    with RegistryClient(host, credentials=creds) as client:
        stable = client.resolve("ci/appliance-release", "stable").digest
        nightly_digest = client.resolve("ci/appliance-release", "nightly").digest
    assert stable == nightly_digest
    bad = subprocess.run([script, "promote"], env=env, capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_workflow_calls_the_script() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any("ci/release.sh nightly" in r for r in runs)
    assert any("ci/release.sh promote" in r for r in runs)
    assert workflow["jobs"]["promote"]["if"] == "github.event_name == 'workflow_dispatch'"
