"""A publish killed with SIGKILL at several points, then re-run: the re-run completes
with the digests of an uninterrupted publish, and the channel never points at an
incomplete release."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.resolve import Resolver
from consumer.signatures import TrustStore
from consumer.verify import verify_release
from ocicore.client import RegistryClient
from ocicore.errors import NotFoundError
from ocicore.pool import ClientPool
from publisher.signing import generate_keypair
from tests.support.releases import ROOT, push_app_images, repo_config

pytestmark = pytest.mark.integration

#: Kill after this many step lines of output: 0 = during the first chart, 6 = charts
#: done (in the bundle), 7 = in the bundle's signature, 8 = in the image build/push,
#: 15 = image locks done (in the manifest), 16 = manifest done (in the signature),
#: 17 = signed (in the promotion).
KILL_POINTS = [0, 6, 7, 8, 15, 16, 17]


def _workspace(tmp: Path, namespace: str) -> Path:
    text = (ROOT / "release.toml").read_text().replace('namespace = "alga"',
                                                     f'namespace = "{namespace}"')
    (tmp / "release.toml").write_text(text.replace('"alga/', f'"{namespace}/'))
    for name in ("charts", "flux", ".tools"):
        (tmp / name).symlink_to(ROOT / name)
    for package in ("control_plane", "ocicore", "consumer"):  # the image's source: a snapshot
        shutil.copytree(ROOT / package, tmp / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    generate_keypair(tmp / "keys" / "release.key", tmp / "keys" / "release.pub", None)
    return tmp


def _publish(work: Path, host: str, env: dict[str, str], *, kill_after: int | None,
             dry_run: bool = False) -> dict[str, object] | None:
    args = [sys.executable, "-m", "consumer", "--registry", host]
    args += ["--output", "json"] if kill_after is None else []
    args += ["publish", "--version", "1.0.0", "--channel", "nightly", "--no-lint"]
    args += ["--dry-run"] if dry_run else []
    proc = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    if kill_after is None:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
        return dict(json.loads(out))
    lines = 0
    while lines < kill_after:
        if not proc.stdout.readline():
            break
        lines += 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return None


def _channel_is_whole_or_absent(client: RegistryClient, trust: TrustStore) -> None:
    try:
        client.resolve("kill/appliance-release", "nightly")
    except NotFoundError:
        return
    resolver = Resolver(client, "kill/appliance-release", trust, state_path=None)
    resolved = resolver.resolve_channel("nightly")
    verify_release(resolved, ClientPool(lambda h: client, client))


def test_killed_publish_resumes_with_the_same_digests(registry_factory: object,
                                                     tmp_path: Path) -> None:
    registry = registry_factory(auth="anonymous")  # type: ignore[operator]
    work = _workspace(tmp_path, "kill")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "PYTHONUNBUFFERED": "1"}
    config = repo_config()
    config = config.model_copy(update={"images": {
        k: config.image(k).model_copy(update={"repository": config.image(k).repository.replace(
            "alga/", "kill/", 1)}) for k in config.images}})
    with RegistryClient(registry.host, credentials=None) as client:
        push_app_images(client, config, "1.0.0")
    # what an uninterrupted publish writes, computed without writing anything
    expected = _publish(work, registry.host, env, kill_after=None, dry_run=True)
    assert expected is not None
    trust = TrustStore.from_pem((work / "keys" / "release.pub").read_bytes())
    with RegistryClient(registry.host, credentials=None) as client:
        for point in KILL_POINTS:
            _publish(work, registry.host, env, kill_after=point)
            _channel_is_whole_or_absent(client, trust)
        result = _publish(work, registry.host, env, kill_after=None)
        assert result is not None
        assert result["digest"] == expected["digest"]
        steps = {s["reference"].split("/", 1)[1]: s["digest"]  # type: ignore[index]
                 for s in result["steps"]}  # type: ignore[union-attr]
        expected_steps = {s["reference"].split("/", 1)[1]: s["digest"]  # type: ignore[index]
                          for s in expected["steps"]}  # type: ignore[union-attr]
        assert steps == expected_steps
        _channel_is_whole_or_absent(client, trust)
        assert str(client.resolve("kill/appliance-release", "nightly").digest) == result["digest"]
