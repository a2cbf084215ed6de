"""The appliance side end to end against the token-auth registry, with releases
published by the publisher: resolve → verify → plan → render → reconcile offline,
the request counts of a cold resolve and a warm check, and every refusal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consumer.cli import main
from consumer.plan import plan_install
from consumer.reconcile import reconcile_offline
from consumer.render import render
from consumer.resolve import Resolver
from consumer.signatures import TrustStore
from consumer.site import parse_site
from consumer.verify import verify_release
from ocicore.client import RegistryClient
from ocicore.config import ClientConfig
from ocicore.credentials import Credentials
from ocicore.digest import Digest
from ocicore.errors import DigestMismatchError
from ocicore.jsonutil import canonical_json
from ocicore.models import OCI_MANIFEST, Descriptor, Manifest
from ocicore.pool import ClientPool
from publisher.charts import HELM_CHART_MEDIA_TYPE, HELM_CONFIG_MEDIA_TYPE
from publisher.promote import promote
from publisher.publish import RELEASE_LAYER_MEDIA_TYPE
from publisher.signing import Signer
from tests.support import faults
from tests.support.releases import publish_version, repo_config

pytestmark = pytest.mark.integration

NS = "alga"  # the profile values name images under alga/
REPO = f"{NS}/appliance-release"
SITE = {
    "hostname": "app.customer.example",
    "databaseHost": "db.customer.example",
    "smtpHost": "smtp.customer.example",
    "smtpFrom": "noreply@customer.example",
}


def _client(instance: object, **kwargs: object) -> RegistryClient:
    creds = Credentials(instance.username, instance.password, source="test")  # type: ignore[attr-defined]
    return RegistryClient(instance.host, credentials=creds, **kwargs)  # type: ignore[attr-defined, arg-type]


def _config(namespace: str = NS) -> object:
    config = repo_config()
    images = {
        key: config.image(key).model_copy(
            update={"repository": config.image(key).repository.replace("alga/", f"{namespace}/", 1)}
        )
        for key in config.images
    }
    registry = config.registry.model_copy(update={"namespace": namespace})
    return config.model_copy(update={"registry": registry, "images": images})


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def world(
    registry_token: object, signer: Signer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """1.0.0 and 1.1.0 published; stable → 1.1.0 (via 1.0.0); nightly → 1.1.0."""
    config = _config()
    tmp = tmp_path_factory.mktemp("consume")
    trust_file = tmp / "trust.pem"
    trust_file.write_bytes(signer.public_pem())
    site_file = tmp / "site.yaml"
    site_file.write_text(json.dumps(SITE))
    with _client(registry_token) as client:
        r100 = publish_version(client, config, "1.0.0", signer)  # type: ignore[arg-type]
        r110 = publish_version(client, config, "1.1.0", signer)  # type: ignore[arg-type]
        for version in ("1.0.0", "1.1.0"):
            promote(client, config, version, "stable", signer, settle=0.01)  # type: ignore[arg-type]
        promote(client, config, "1.1.0", "nightly", signer, settle=0.01)  # type: ignore[arg-type]
    return {
        "config": config,
        "trust": trust_file,
        "site": site_file,
        "tmp": tmp,
        "r100": r100.digest,
        "r110": r110.digest,
    }


def test_resolve_verify_plan_render_reconcile(
    registry_token: object, world: dict[str, object], tmp_path: Path
) -> None:
    trust = TrustStore.from_pem(Path(world["trust"]).read_bytes())  # type: ignore[arg-type]
    with _client(registry_token) as client:
        resolver = Resolver(client, REPO, trust, state_path=tmp_path / "state.json")
        resolved = resolver.resolve_channel("stable")
        cold_requests, cold_tokens = client.stats.requests, client.auth.token_requests
        assert resolved.manifest.version == "1.1.0" and resolved.digest == world["r110"]
        before = client.stats.requests
        digest, changed = resolver.check("stable")
        warm_requests = client.stats.requests - before
        assert (digest, changed, warm_requests) == (resolved.digest, False, 1)
        assert client.auth.token_requests == cold_tokens  # the token was cached
        pool = ClientPool(lambda host: client, client)
        checks = verify_release(resolved, pool)
        assert {c.artifact for c in checks} >= {
            "config bundle",
            "control-plane image",
            "chart sebastian",
            "image algaCore",
        }
        site = parse_site(SITE)
        install = plan_install(resolved, site)
        written = render(install, tmp_path / "rendered")
        assert len(written) == len(install.objects)
        offline = reconcile_offline(resolved, site, pool, tmp_path / "offline")
    pinned = {str(resolved.locate(ref)) for ref in (resolved.manifest.locks.images or {}).values()}  # type: ignore[union-attr]
    assert offline.images and all(
        any(image.endswith(p.split("@")[1]) for p in pinned) for image in offline.images
    )
    print(
        f"\ncold resolve: {cold_requests} registry requests + {cold_tokens} token "
        f"requests; warm unchanged check: {warm_requests} request"
    )


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _consumer_args(registry_token: object, world: dict[str, object], state: Path) -> list[str]:
    return [
        "--registry",
        registry_token.host,
        "resolve",
        "stable",  # type: ignore[attr-defined]
        "--repository",
        REPO,
        "--trust",
        str(world["trust"]),
        "--state",
        str(state),
    ]


@pytest.fixture
def creds_env(registry_token: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_RELEASE_USERNAME", registry_token.username)  # type: ignore[attr-defined]
    monkeypatch.setenv("APPLIANCE_RELEASE_PASSWORD", registry_token.password)  # type: ignore[attr-defined]


def _push_release_artifact(client: RegistryClient, document: dict[str, object], tag: str) -> Digest:
    data = canonical_json(document)
    from consumer.manifest import ARTIFACT_TYPE, CONFIG_MEDIA_TYPE

    client.push_blob(REPO, data)
    manifest = Manifest(
        schema_version=2,
        media_type=OCI_MANIFEST,
        artifact_type=ARTIFACT_TYPE,
        config=Descriptor.of(CONFIG_MEDIA_TYPE, data),
        layers=[Descriptor.of(RELEASE_LAYER_MEDIA_TYPE, data)],
    )
    return client.push_manifest(REPO, manifest.to_json(), OCI_MANIFEST, tag=tag)


def _current_document(client: RegistryClient, tag: str) -> dict[str, object]:
    parsed = client.get_manifest(REPO, tag).parse()
    return dict(json.loads(client.fetch_blob_bytes(REPO, parsed.config)))  # type: ignore[union-attr]


def test_refusals_write_nothing(
    registry_token: object,
    world: dict[str, object],
    signer: Signer,
    tmp_path: Path,
    creds_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "state.json"
    out_dir = tmp_path / "out"
    host = registry_token.host  # type: ignore[attr-defined]
    config = world["config"]
    # install 1.1.0 from stable: the state records it
    code, _, err = _run(capsys, *_consumer_args(registry_token, world, state))
    assert code == 0, err
    trust = TrustStore.from_pem(Path(world["trust"]).read_bytes())  # type: ignore[arg-type]
    with _client(registry_token) as client:
        Resolver(client, REPO, trust, state_path=state).record_installed(
            Resolver(client, REPO, trust, state_path=state).resolve_channel("stable")
        )
    recorded = state.read_bytes()

    def refused(expected_code: int, fragment: str, *extra: str) -> None:
        args = [
            "--registry",
            host,
            "render",
            "stable",
            "--repository",
            REPO,
            "--trust",
            str(world["trust"]),
            "--state",
            str(state),
            "--site",
            str(world["site"]),
            "--out",
            str(out_dir),
            *extra,
        ]
        code, out, err = _run(capsys, *args)
        assert code == expected_code, err
        assert out == ""
        assert fragment in err and err.count("\n") == 1 and err.startswith("error: ")
        assert state.read_bytes() == recorded
        assert not out_dir.exists() or not any(out_dir.iterdir())

    with _client(registry_token) as client:
        stable = client.resolve(REPO, "stable").digest
        # 1. the channel moved back to an older release
        promote(
            client,
            config,
            "1.0.0",
            "stable",
            signer,
            settle=0.01,  # type: ignore[arg-type]
            allow_downgrade=True,
        )
        refused(6, "older than the installed 1.1.0")
        # 2. an unsigned release on the channel
        doc = _current_document(client, "1.1.0")
        doc["version"] = "1.2.0"
        doc["sequence"] = 99
        _push_release_artifact(client, doc, "stable")
        refused(5, "is not signed")
        # 3. a signature for nightly served under stable
        r130 = publish_version(client, config, "1.3.0", signer).digest  # type: ignore[arg-type]
        promote(client, config, "1.3.0", "nightly", signer, settle=0.01)  # type: ignore[arg-type]
        client.tag_manifest(REPO, r130, "stable")  # type: ignore[arg-type]
        refused(5, "not for channel 'stable'")
        # 4. an expired binding
        past = datetime.now(UTC) - timedelta(days=30)
        expiring = config.model_copy(
            update={
                "signing": config.signing.model_copy(  # type: ignore[attr-defined]
                    update={"binding_days": 1}
                )
            }
        )
        client.tag_manifest(REPO, world["r100"], "stable")  # type: ignore[arg-type]
        publish_version(client, config, "1.4.0", signer)  # type: ignore[arg-type]
        promote(client, expiring, "1.4.0", "stable", signer, settle=0.01, now=past)  # type: ignore[arg-type]
        refused(5, "expired at")
        # 8. a manifest with schema v2
        doc = _current_document(client, "1.1.0")
        doc["schema"] = "alga.appliance.release/v2"
        doc["version"] = "9.0.0"
        v2 = _push_release_artifact(client, doc, "stable")
        from consumer.signatures import build_payload
        from publisher.signing import append_signature

        payload = build_payload(f"{host}/{REPO}", v2, channel="stable", version="9.0.0")
        append_signature(client, REPO, v2, payload, signer.sign(payload))
        refused(2, "alga.appliance.release/v1")
        # 5. a lock whose artifact was re-pushed with other content
        client.tag_manifest(REPO, stable, "stable")
        chart_repo = f"{NS}/charts/email-service"
        content = b"not the published chart"
        chart_config = b'{"name":"email-service","version":"1.0.0"}'
        client.push_blob(chart_repo, content)
        client.push_blob(chart_repo, chart_config)
        other = Manifest(
            schema_version=2,
            media_type=OCI_MANIFEST,
            config=Descriptor.of(HELM_CONFIG_MEDIA_TYPE, chart_config),
            layers=[Descriptor.of(HELM_CHART_MEDIA_TYPE, content)],
        )
        original = client.resolve(chart_repo, "1.0.0").digest
        client.push_manifest(chart_repo, other.to_json(), OCI_MANIFEST, tag="1.0.0")
        args = [
            "--registry",
            host,
            "verify",
            "stable",
            "--repository",
            REPO,
            "--trust",
            str(world["trust"]),
            "--state",
            str(state),
        ]
        code, _, err = _run(capsys, *args)
        assert code == 4 and "chart email-service" in err and str(original) in err
        assert state.read_bytes() == recorded
        client.tag_manifest(chart_repo, original, "1.0.0")


def test_corrupted_config_blob_is_refused(registry_token: object, world: dict[str, object]) -> None:
    """A registry cannot be made to serve a blob that does not match its digest, so the
    corruption is injected in front of the real one (the happy path above is the same)."""
    trust = TrustStore.from_pem(Path(world["trust"]).read_bytes())  # type: ignore[arg-type]
    transport = faults.FaultTransport()
    with _client(registry_token) as plain:
        release = plain.get_manifest(REPO, world["r110"]).parse()  # type: ignore[arg-type]
    config_path = f"/v2/{REPO}/blobs/{release.config.digest}"  # type: ignore[union-attr]
    transport.add("GET", config_path.replace(".", r"\."), faults.flip_byte(10), times=100)
    http = httpx.Client(transport=transport)
    creds = Credentials(registry_token.username, registry_token.password, source="t")  # type: ignore[attr-defined]
    with RegistryClient(
        registry_token.host,
        http=http,
        credentials=creds,  # type: ignore[attr-defined]
        plain_http=True,
        config=ClientConfig(),
        sleep=lambda s: None,
    ) as client:
        with pytest.raises(DigestMismatchError, match=str(release.config.digest)):  # type: ignore[union-attr]
            Resolver(client, REPO, trust, state_path=None).resolve_version("1.1.0")
