"""The appliance needs only consumer + ocicore: with publisher, rich and jsonschema made
unimportable, the CLI still resolves, verifies and prints the control-plane image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ocicore.client import RegistryClient
from publisher.promote import promote
from publisher.signing import Signer
from tests.support.releases import ROOT, publish_version, repo_config

pytestmark = pytest.mark.integration

BLOCKER = """
import importlib.abc, runpy, sys
BLOCKED = ("publisher", "rich", "jsonschema", "pytest", "oras")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: appliance side)")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["appliance-release", *sys.argv[1:]]
runpy.run_module("consumer", run_name="__main__")
"""


def test_consumer_cli_works_without_the_publisher(registry: object, tmp_path: Path) -> None:
    signer = Signer(ec.generate_private_key(ec.SECP256R1()))
    config = repo_config()
    registry_cfg = config.registry.model_copy(update={"namespace": "solo"})
    config = config.model_copy(update={"registry": registry_cfg})
    host = registry.host  # type: ignore[attr-defined]
    with RegistryClient(host, credentials=None) as client:
        publish_version(client, config, "1.0.0", signer)
        promote(client, config, "1.0.0", "stable", signer, settle=0.01)
    (tmp_path / "trust.pem").write_bytes(signer.public_pem())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    common = ["--registry", host]
    consumer = ["--repository", "solo/appliance-release", "--trust", str(tmp_path / "trust.pem")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", BLOCKER, *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, check=False, timeout=120)

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    assert "resolve" in helped.stdout and "publish" not in helped.stdout
    resolved = run(*common, "resolve", "stable", *consumer)
    assert resolved.returncode == 0, resolved.stderr
    assert "stable -> 1.0.0" in resolved.stdout
    verified = run(*common, "verify", "stable", *consumer)
    assert verified.returncode == 0, verified.stderr
    image = run(*common, "control-plane-image", "stable", *consumer)
    assert image.returncode == 0 and "solo/appliance-control-plane@sha256:" in image.stdout
