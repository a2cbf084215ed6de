"""``audit`` against a real registry: one namespace seeded with healthy releases and one
of each defect, each reported exactly once and nothing on the healthy releases; the
CLI's JSON report and exit code; a 300-release namespace audited in one run."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consumer.cli import main
from consumer.manifest import (
    CONFIG_MEDIA_TYPE,
    manifest_document,
    read_manifest,
    validate_document,
    write_manifest,
)
from consumer.signatures import TrustStore, build_payload
from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.models import OCI_MANIFEST, Descriptor, Manifest
from publisher.audit import AuditReport, Finding, audit
from publisher.charts import pack_chart
from publisher.promote import promote
from publisher.publish import RELEASE_LAYER_MEDIA_TYPE, release_artifact
from publisher.push import push_immutable
from publisher.release_config import ReleaseConfig
from publisher.signing import Signer, append_signature
from tests.support.artifacts import push_artifact
from tests.support.releases import ROOT, publish_version, repo_config

pytestmark = pytest.mark.integration

CHANNELS = ["stable", "nightly", "edge", "beta"]
HEALTHY = ("1.0.0", "1.1.0")
NOW = datetime.now(UTC)


def namespace_config(namespace: str, *, binding_days: int = 0) -> ReleaseConfig:
    config = repo_config()
    images = {
        key: config.image(key).model_copy(update={
            "repository": config.image(key).repository.replace("alga/", f"{namespace}/", 1)})
        for key in config.images
    }
    return config.model_copy(update={
        "registry": config.registry.model_copy(update={"namespace": namespace}),
        "appliance": config.appliance.model_copy(update={"channels": CHANNELS}),
        "signing": config.signing.model_copy(update={"binding_days": binding_days}),
        "images": images,
    })


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def trust(signer: Signer) -> TrustStore:
    return TrustStore.from_pem(signer.public_pem())


@pytest.fixture(scope="module")
def seeded(registry: Any, signer: Signer, tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Any]:
    """Namespace ``audit``: 1.0.0 and 1.1.0 (on stable) healthy; then one of each defect."""
    config = namespace_config("audit")
    repo = config.release_repository
    # a root whose pgbouncer chart has a version no other release uses (1.5.0's chart)
    root = tmp_path_factory.mktemp("audit-root")
    shutil.copytree(ROOT / "charts", root / "charts")
    (root / "flux").symlink_to(ROOT / "flux")
    chart_yaml = root / "charts" / "pgbouncer" / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("version: 1.0.0", "version: 9.9.9"))
    digests: dict[str, Digest] = {}
    with RegistryClient(registry.host, credentials=None) as client:
        for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"):
            report = publish_version(client, config, version, signer)
            assert report.digest is not None
            digests[version] = report.digest
        report = publish_version(client, config, "1.5.0", signer, root=root)
        assert report.digest is not None
        digests["1.5.0"] = report.digest
        promote(client, config, "1.1.0", "stable", signer, settle=0.01, actor="ci@audit")
        # expired binding: promoted ten days ago with bindings valid for one day
        promote(client, namespace_config("audit", binding_days=1), "1.4.0", "beta", signer,
                settle=0.01, actor="ci@audit", now=NOW - timedelta(days=10))
        # missing blob: the layer of 1.2.0's control-plane image
        client.delete_blob(config.control_plane_repository, Digest.of(b"control-plane 1.2.0"))
        # unsigned release on a channel: 1.3.0 loses its signatures, nightly is tagged by hand
        signatures = client.resolve(repo, f"{digests['1.3.0'].tag_form}.sig").digest
        client.delete_manifest(repo, signatures)
        client.tag_manifest(repo, digests["1.3.0"], "nightly")
        # a re-pushed chart version with new content (1.5.0 locks the first one)
        chart_dir = root / "charts" / "pgbouncer"
        (chart_dir / "values.yaml").write_text((chart_dir / "values.yaml").read_text()
                                               + "# re-pushed\n")
        chart = pack_chart(chart_dir, epoch=1)
        for data, descriptor in chart.blobs():
            client.push_blob(f"{config.charts_repository}/pgbouncer", data, descriptor.digest)
        client.push_manifest(f"{config.charts_repository}/pgbouncer", chart.manifest,
                             OCI_MANIFEST, tag="9.9.9")
        # a channel pointing at a manifest that is not a release
        edge, _ = push_artifact(client, repo, "edge", [b"not a release"])
        # an artifact no release references (a clean-up candidate, not a defect)
        orphan, _ = push_artifact(client, f"{config.charts_repository}/orphan", "0.0.1",
                                  [b"orphan chart"])
    return {"config": config, "digests": digests, "host": registry.host, "edge": edge,
            "orphan": orphan, "chart": chart.digest}


def _by_kind(report: AuditReport) -> dict[str, list[Finding]]:
    kinds: dict[str, list[Finding]] = {}
    for finding in report.findings:
        kinds.setdefault(finding.kind, []).append(finding)
    return kinds


def test_each_seeded_defect_is_reported_once_and_healthy_releases_are_clean(
    seeded: dict[str, Any], trust: TrustStore
) -> None:
    config, digests, host = seeded["config"], seeded["digests"], seeded["host"]
    repo = f"{host}/{config.release_repository}"
    with RegistryClient(host, credentials=None) as client:
        report = audit(client, config, trust, concurrency=8, now=NOW)
    kinds = _by_kind(report)
    assert sorted(kinds) == ["binding-expired", "missing-blob", "not-a-release", "tag-moved",
                             "unsigned"], report.text_lines()
    assert all(len(found) == 1 for found in kinds.values()), report.findings
    unsigned = kinds["unsigned"][0]
    assert (unsigned.subject, unsigned.affects) == (f"{repo}:nightly",
                                                    ("1.3.0", "channel:nightly"))
    blob = Digest.of(b"control-plane 1.2.0")
    missing = kinds["missing-blob"][0]
    assert missing.subject == f"{host}/{config.control_plane_repository}@{blob}"
    assert missing.affects == ("1.2.0",)
    moved = kinds["tag-moved"][0]
    assert moved.subject == f"{host}/{config.charts_repository}/pgbouncer:9.9.9"
    assert moved.affects == ("1.5.0",) and str(seeded["chart"]) in moved.message
    assert kinds["not-a-release"][0].subject == f"{repo}:edge"
    assert kinds["not-a-release"][0].affects == ("channel:edge",)
    expired = kinds["binding-expired"][0]
    assert (expired.subject, expired.affects) == (f"{repo}:beta", ("1.4.0", "channel:beta"))
    # nothing concerns the healthy releases
    for finding in report.findings:
        text = " ".join([finding.subject, finding.message, *finding.affects])
        for version in HEALTHY:
            assert version not in finding.affects
            assert str(digests[version]) not in text
    verdicts = {v.version: v for v in report.releases if v.version}
    assert sorted(verdicts) == ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"]
    assert all(verdicts[v].ok for v in (*HEALTHY, "1.4.0"))
    assert not verdicts["1.2.0"].locks_ok and verdicts["1.2.0"].readable
    assert verdicts["1.3.0"].signed_by is None and verdicts["1.3.0"].locks_ok
    assert not verdicts["1.5.0"].locks_ok
    assert verdicts["1.1.0"].tags == ("1.1.0", "stable")
    channels = {c.channel: c for c in report.channels}
    assert {c: s.status for c, s in channels.items()} == {
        "stable": "ok", "nightly": "unsigned", "edge": "not-a-release",
        "beta": "binding-expired"}
    assert [(r.from_version, r.to_version, r.by) for r in channels["stable"].history] == [
        (None, "1.1.0", "ci@audit")]
    assert channels["beta"].expires is not None and channels["beta"].expires < NOW.isoformat()
    # the clean-up candidate is listed; the re-pushed chart tag (already a finding) is not
    assert [(u.repository, u.tag, u.digest) for u in report.unreferenced] == [
        (f"{config.charts_repository}/orphan", "0.0.1", str(seeded["orphan"]))]
    assert report.requests > 0 and not report.ok
    assert report.summary().startswith("audit failed: 5 findings")


def _toml(tmp_path: Path, namespace: str) -> Path:
    text = (ROOT / "release.toml").read_text()
    text = text.replace('namespace = "alga"', f'namespace = "{namespace}"')
    text = text.replace('"alga/', f'"{namespace}/')
    text = text.replace('channels = ["stable", "nightly"]', f"channels = {json.dumps(CHANNELS)}")
    path = tmp_path / "release.toml"
    path.write_text(text)
    return path


def test_cli_json_report_and_exit_code(seeded: dict[str, Any], signer: Signer,
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    trust_file = tmp_path / "trust.pem"
    trust_file.write_bytes(signer.public_pem())
    args = ["--registry", seeded["host"], "--output", "json", "audit",
            "--config", str(_toml(tmp_path, "audit")), "--trust", str(trust_file)]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 4
    document = json.loads(out)
    assert document["ok"] is False
    assert sorted(f["kind"] for f in document["findings"]) == [
        "binding-expired", "missing-blob", "not-a-release", "tag-moved", "unsigned"]
    assert len(document["releases"]) == 7  # six releases and the non-release on edge
    assert err.count("\n") == 1 and err.startswith("error: audit failed: 5 findings")
    code = main(args[:2] + args[4:])  # text
    out, _ = capsys.readouterr()
    assert code == 4
    assert out.rstrip().splitlines()[-1].startswith("audit failed: 5 findings (1 binding-expired")


def push_signed_release(client: RegistryClient, repository: str, signer: Signer,
                        document: dict[str, Any]) -> Digest:
    """A release manifest artifact from ``document``, under its version tag, signed: the
    publisher's own building blocks without the charts, bundle and images."""
    release = validate_document(document, what="synthetic release")
    data = write_manifest(release)
    artifact = release_artifact(data, release)
    push_immutable(client, repository, release.version,
                   [(data, Descriptor.of(CONFIG_MEDIA_TYPE, data)),
                    (data, Descriptor.of(RELEASE_LAYER_MEDIA_TYPE, data))],
                   artifact, OCI_MANIFEST, what="release manifest")
    digest = Digest.of(artifact)
    payload = build_payload(f"{client.registry}/{repository}", digest, version=release.version,
                            sequence=release.sequence, created=release.created_at)
    append_signature(client, repository, digest, payload, signer.sign(payload))
    return digest


def release_document(client: RegistryClient, repository: str, digest: Digest) -> dict[str, Any]:
    parsed = client.get_manifest(repository, digest).parse()
    assert isinstance(parsed, Manifest)
    return manifest_document(read_manifest(client.fetch_blob_bytes(repository, parsed.config)))


def _seed_many(client: RegistryClient, config: ReleaseConfig, signer: Signer,
               count: int) -> None:
    """``count`` signed releases whose locks point at one published release's artifacts."""
    base = publish_version(client, config, "0.1.0", signer)
    assert base.digest is not None
    repo = config.release_repository
    document = release_document(client, repo, base.digest)

    def push(n: int) -> None:
        push_signed_release(client, repo, signer, {
            **document, "version": f"1.{n // 100}.{n % 100}", "sequence": 1 + n})

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(push, range(1, count)))


def test_a_300_release_namespace_is_audited_in_one_run(registry: Any, signer: Signer,
                                                       trust: TrustStore) -> None:
    config = namespace_config("audit-scale")
    with RegistryClient(registry.host, credentials=None) as client:
        _seed_many(client, config, signer, 300)
        promote(client, config, "1.2.99", "stable", signer, settle=0.01)
    with RegistryClient(registry.host, credentials=None) as client:
        started = time.monotonic()
        report = audit(client, config, trust, concurrency=8)
        seconds = time.monotonic() - started
    assert report.ok, report.findings
    assert len(report.releases) == 300 and all(v.ok for v in report.releases)
    assert report.unreferenced == []
    assert {c.channel: c.status for c in report.channels}["stable"] == "ok"
    # per release: its manifest, config blob, signature manifest and payload; shared
    # artifacts are checked once
    assert report.requests_per_release < 4.5, report.requests
    print(f"\naudit of 300 releases: {seconds:.2f} s, {report.requests} requests "
          f"({report.requests_per_release:.2f} per release)")
