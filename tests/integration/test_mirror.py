"""``mirror`` and ``import`` between real registry processes: a release mirrored through
an archive into a second registry resolves, verifies and reconciles offline there with
the same digests, only the registry address changed; re-running copies nothing; the
direct registry-to-registry mirror and the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consumer.cli import main
from consumer.reconcile import reconcile_offline
from consumer.resolve import Resolver
from consumer.signatures import TrustStore
from consumer.site import parse_site
from consumer.tools import Helm, Kubectl
from consumer.verify import pinned_artifacts, verify_release
from ocicore.client import RegistryClient
from ocicore.config import ClientConfig, RetryPolicy
from ocicore.digest import Digest
from ocicore.pool import ClientPool
from publisher.mirror import import_archive, mirror, mirror_to_archive
from publisher.promote import history, promote
from publisher.release_config import ReleaseConfig
from publisher.signing import Signer
from tests.integration.test_audit import push_signed_release, release_document
from tests.registry import free_port
from tests.support.releases import ROOT, publish_version, repo_config
from tests.tools import require_tool
from tests.unit.test_plan import SITE

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def trust(signer: Signer) -> TrustStore:
    return TrustStore.from_pem(signer.public_pem())


@pytest.fixture
def source(registry_factory: Any, signer: Signer) -> tuple[Any, ReleaseConfig, Digest]:
    """A registry of its own holding release 1.0.0 of this repository's appliance (the
    ``alga`` namespace its values name), on channel stable."""
    instance = registry_factory()
    config = repo_config()
    with RegistryClient(instance.host, credentials=None) as client:
        report = publish_version(client, config, "1.0.0", signer)
        promote(client, config, "1.0.0", "stable", signer, settle=0.01, actor="ci@mirror")
    assert report.digest is not None
    return instance, config, report.digest


def _only(host: str) -> ClientPool:
    """Clients for ``host`` alone: the consumer must never reach the source registry."""
    def factory(registry: str) -> RegistryClient:
        assert registry == host, f"the consumer contacted {registry}, not the mirror {host}"
        return RegistryClient(registry, credentials=None)

    return ClientPool(factory)


def _source_pins(host: str, config: ReleaseConfig, trust: TrustStore) -> dict[str, Digest]:
    with RegistryClient(host, credentials=None) as client:
        resolved = Resolver(client, config.release_repository, trust,
                            state_path=None).resolve_version("1.0.0")
    return {p.artifact: p.expected for p in pinned_artifacts(resolved)}


def test_mirror_through_an_archive_resolves_verifies_and_reconciles_at_the_mirror(
    source: tuple[Any, ReleaseConfig, Digest], registry_factory: Any,
    trust: TrustStore, tmp_path: Path,
) -> None:
    registry, config, digest = source
    archive = tmp_path / "release.tar"
    with RegistryClient(registry.host, credentials=None) as src:
        report = mirror_to_archive(src, config, "stable", archive, trust=trust, history=True)
    assert (report.version, report.digest, report.channel) == ("1.0.0", str(digest), "stable")
    assert report.warnings == [] and report.bytes_copied > 0
    assert [a.artifact for a in report.artifacts][-3:] == [
        "signatures", "promotion record 000001", "channel stable"]

    second = registry_factory()
    with RegistryClient(second.host, credentials=None) as dst, _only(second.host) as pool:
        imported = import_archive(archive, dst)
        # blobs shared by several repositories are stored once in the archive
        assert imported.bytes_copied >= report.bytes_copied
        resolved = Resolver(dst, config.release_repository, trust,
                            state_path=None).resolve_channel("stable")
        assert (resolved.registry, resolved.digest) == (second.host, digest)
        checks = verify_release(resolved, pool)
        assert {c.artifact: c.expected for c in checks} == _source_pins(registry.host, config,
                                                                        trust)
        assert all(c.reference.startswith(second.host + "/") for c in checks)
        render = reconcile_offline(resolved, parse_site(SITE), pool, tmp_path / "render",
                                   helm=Helm(require_tool("helm")),
                                   kubectl=Kubectl(require_tool("kubectl")))
        locks = resolved.manifest.locks
        assert locks is not None and locks.images is not None
        pinned = {ref.rpartition("@")[2] for ref in locks.images.values()}
        assert render.images and all(i.startswith(second.host + "/") for i in render.images)
        assert {i.rpartition("@")[2] for i in render.images} <= pinned
        assert [r.to_version for r in history(dst, config, "stable")] == ["1.0.0"]

        # a second import and a second mirror into the same archive copy nothing
        uploaded = dst.stats.bytes_uploaded
        again = import_archive(archive, dst)
        assert (again.bytes_copied, again.manifests_copied) == (0, 0)
        assert dst.stats.bytes_uploaded == uploaded
    with RegistryClient(registry.host, credentials=None) as src:
        size = archive.stat().st_size
        rerun = mirror_to_archive(src, config, "stable", archive, trust=trust, history=True)
    assert (rerun.bytes_copied, rerun.manifests_copied, rerun.blobs_copied) == (0, 0, 0)
    assert archive.stat().st_size == size


def test_mirror_registry_to_registry_and_a_rerun_copies_nothing(
    source: tuple[Any, ReleaseConfig, Digest], registry_factory: Any,
    trust: TrustStore,
) -> None:
    registry, config, digest = source
    target = registry_factory()
    with (RegistryClient(registry.host, credentials=None) as src,
          RegistryClient(target.host, credentials=None) as dst):
        first = mirror(src, config, "1.0.0", dst, trust=trust)
        assert first.channel is None and first.digest == str(digest)
        assert first.manifests_copied > 0 and first.bytes_copied > 0
        # by version: the version tag, not the channel
        assert dst.list_tags(config.release_repository) == sorted(
            ["1.0.0", f"{digest.tag_form}.sig"])
        since = len(target.access_log())
        uploaded = dst.stats.bytes_uploaded
        second = mirror(src, config, "1.0.0", dst, trust=trust)
        assert (second.bytes_copied, second.manifests_copied, second.blobs_copied) == (0, 0, 0)
        assert {a.outcome for a in second.artifacts} == {"present"}
        assert dst.stats.bytes_uploaded == uploaded
        writes = [r for r in target.access_log()[since:] if r.method in ("PUT", "POST", "PATCH")]
        assert writes == []
    with RegistryClient(target.host, credentials=None) as dst, _only(target.host) as pool:
        resolved = Resolver(dst, config.release_repository, trust,
                            state_path=None).resolve_version("1.0.0")
        assert resolved.digest == digest
        verify_release(resolved, pool)


def test_an_unreachable_application_image_is_skipped_with_a_warning(
    source: tuple[Any, ReleaseConfig, Digest], registry_factory: Any, signer: Signer,
    trust: TrustStore,
) -> None:
    registry, config, digest = source
    repo = config.release_repository
    unreachable = f"127.0.0.1:{free_port()}"  # nothing listens there
    with RegistryClient(registry.host, credentials=None) as src:
        document = release_document(src, repo, digest)
        pgbouncer = document["locks"]["images"]["pgbouncer"]
        document["locks"]["images"]["pgbouncer"] = pgbouncer.replace(
            registry.host, unreachable, 1)
        push_signed_release(src, repo, signer, {**document, "version": "1.0.1", "sequence": 2})
        target = registry_factory()
        no_retries = ClientConfig(retry=RetryPolicy(max_attempts=1))
        with RegistryClient(target.host, credentials=None) as dst:
            report = mirror(src, config, "1.0.1", dst, trust=trust,
                            client_for=lambda host: RegistryClient(host, credentials=None,
                                                                   config=no_retries))
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith(f"image pgbouncer {unreachable}/alga/mirror/pgbouncer")
    assert "image pgbouncer" not in {a.artifact for a in report.artifacts}
    assert {"config bundle", "control-plane image", "image algaCore", "release manifest",
            "signatures"} <= {a.artifact for a in report.artifacts}


def test_cli_mirror_to_archive_import_and_to_registry(
    source: tuple[Any, ReleaseConfig, Digest], registry_factory: Any,
    signer: Signer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    registry, _, digest = source
    trust_file = tmp_path / "trust.pem"
    trust_file.write_bytes(signer.public_pem())
    common = ["--config", str(ROOT / "release.toml"), "--trust", str(trust_file)]
    archive = tmp_path / "out" / "stable.tar"
    code = main(["--registry", registry.host, "--output", "json", "mirror", "stable",
                 "--to-archive", str(archive), *common])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["digest"] == str(digest) and archive.is_file()

    target = registry_factory()
    code = main(["--output", "json", "import", str(archive), "--to", target.host])
    out, err = capsys.readouterr()
    assert code == 0, err
    tags = {tuple(a["tags"]) for a in json.loads(out)["artifacts"]}
    assert ("stable",) in tags and ("1.0.0",) in tags

    direct = registry_factory()
    code = main(["--registry", registry.host, "mirror", "1.0.0", "--to", direct.host, *common])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "verified at" in err and f"to {direct.host}" in out.splitlines()[-1]
    code = main(["--registry", registry.host, "mirror", "1.0.0", *common])
    _, err = capsys.readouterr()
    assert code == 2 and "exactly one of --to" in err
