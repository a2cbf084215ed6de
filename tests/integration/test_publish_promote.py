"""Publish → promote → history against the token-auth registry, with downgrade refusal
and concurrent promotions."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consumer.manifest import read_manifest
from consumer.resolve import Resolver
from consumer.signatures import TrustStore
from ocicore.client import RegistryClient
from ocicore.credentials import Credentials
from ocicore.digest import Digest
from publisher.promote import PromotionError, RaceLostError, history, promote
from publisher.signing import Signer
from tests.support.releases import publish_version, repo_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(ec.generate_private_key(ec.SECP256R1()))


def _client(instance: object) -> RegistryClient:
    creds = Credentials(instance.username, instance.password, source="test")  # type: ignore[attr-defined]
    return RegistryClient(instance.host, credentials=creds)  # type: ignore[attr-defined]


def _config(namespace: str) -> object:
    config = repo_config()
    registry = config.registry.model_copy(update={"namespace": namespace})
    images = {
        key: config.image(key).model_copy(
            update={"repository": config.image(key).repository.replace("alga/", f"{namespace}/", 1)}
        )
        for key in config.images
    }
    return config.model_copy(update={"registry": registry, "images": images})


def test_publish_promote_history_and_downgrade(registry_token: object, signer: Signer) -> None:
    config = _config("e2e")
    with _client(registry_token) as client:
        r100 = publish_version(client, config, "1.0.0", signer)  # type: ignore[arg-type]
        r110 = publish_version(client, config, "1.1.0", signer)  # type: ignore[arg-type]
        assert (r100.sequence, r110.sequence) == (1, 2)
        first = promote(
            client,
            config,
            "1.0.0",
            "stable",
            signer,
            settle=0.05,  # type: ignore[arg-type]
            actor="ci@test",
        )
        second = promote(
            client,
            config,
            "1.1.0",
            "stable",
            signer,
            settle=0.05,  # type: ignore[arg-type]
            actor="ci@test",
        )
        assert (first.outcome, second.outcome) == ("moved", "moved")
        records = history(client, config, "stable")  # type: ignore[arg-type]
        assert [(r.from_version, r.to_version, r.by) for r in records] == [
            (None, "1.0.0", "ci@test"),
            ("1.0.0", "1.1.0", "ci@test"),
        ]
        with pytest.raises(PromotionError, match="is a downgrade"):
            promote(client, config, "1.0.0", "stable", signer, settle=0.05)  # type: ignore[arg-type]
        back = promote(
            client,
            config,
            "1.0.0",
            "stable",
            signer,
            settle=0.05,  # type: ignore[arg-type]
            allow_downgrade=True,
        )
        assert back.outcome == "moved"
        assert client.resolve(config.release_repository, "stable").digest == r100.digest  # type: ignore[attr-defined]
        assert len(history(client, config, "stable")) == 3  # type: ignore[arg-type]
        # the consumer resolves the channel with the signer's public key
        trust = TrustStore.from_pem(signer.public_pem())
        resolved = Resolver(
            client,
            config.release_repository,
            trust,  # type: ignore[attr-defined]
            state_path=None,
        ).resolve_channel("stable")
        assert resolved.manifest.version == "1.0.0"


def test_republish_is_a_no_op_with_zero_bytes(registry_token: object, signer: Signer) -> None:
    config = _config("again")
    with _client(registry_token) as client:
        first = publish_version(client, config, "2.0.0", signer)  # type: ignore[arg-type]
        uploaded = client.stats.bytes_uploaded
        second = publish_version(client, config, "2.0.0", signer)  # type: ignore[arg-type]
        assert second.digest == first.digest
        assert {s.outcome for s in second.steps if s.step in ("chart", "bundle", "manifest")} == {
            "unchanged"
        }
        # stand-in app images are re-pushed by the test helper as skipped blobs: zero bytes
        assert client.stats.bytes_uploaded == uploaded


def test_dry_run_writes_nothing_and_predicts_the_digest(
    registry_token: object, signer: Signer
) -> None:
    config = _config("dry")
    with _client(registry_token) as client:
        plan = publish_version(client, config, "3.0.0", signer, dry_run=True)  # type: ignore[arg-type]
        assert {s.outcome for s in plan.steps} <= {"planned", "locked"}
        assert client.list_tags(config.release_repository, missing_ok=True) == []  # type: ignore[attr-defined]
        real = publish_version(client, config, "3.0.0", signer)  # type: ignore[arg-type]
        assert real.digest == plan.digest


def test_concurrent_promotions_one_wins(registry_token: object, signer: Signer) -> None:
    config = _config("race")
    outcomes: dict[str, object] = {}
    with _client(registry_token) as client:
        publish_version(client, config, "1.0.0", signer)  # type: ignore[arg-type]
        publish_version(client, config, "1.1.0", signer)  # type: ignore[arg-type]
        publish_version(client, config, "1.2.0", signer)  # type: ignore[arg-type]
        promote(client, config, "1.0.0", "stable", signer, settle=0.05)  # type: ignore[arg-type]
    barrier = threading.Barrier(2)

    def run(version: str) -> None:
        with _client(registry_token) as own:
            barrier.wait()
            try:
                outcomes[version] = promote(
                    own,
                    config,
                    version,
                    "stable",
                    signer,  # type: ignore[arg-type]
                    settle=0.5,
                )
            except RaceLostError as exc:
                outcomes[version] = exc

    threads = [threading.Thread(target=run, args=(v,)) for v in ("1.1.0", "1.2.0")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [v for v, o in outcomes.items() if not isinstance(o, RaceLostError)]
    losers = [o for o in outcomes.values() if isinstance(o, RaceLostError)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert losers[0].exit_code == 9
    with _client(registry_token) as client:
        records = history(client, config, "stable")  # type: ignore[arg-type]
        tag = client.resolve(config.release_repository, "stable").digest  # type: ignore[attr-defined]
        assert records[-1].to_version == winners[0]
        assert records[-1].to_digest == str(tag)
        config_blob = client.get_manifest(config.release_repository, tag).parse()  # type: ignore[attr-defined]
        release = read_manifest(
            client.fetch_blob_bytes(
                config.release_repository,  # type: ignore[attr-defined]
                config_blob.config,
            )
        )  # type: ignore[union-attr]
        assert release.version == winners[0]


def test_unknown_channel_is_refused(registry_token: object, signer: Signer, tmp_path: Path) -> None:
    config = _config("nochan")
    with _client(registry_token) as client, pytest.raises(PromotionError, match="not one of"):
        promote(client, config, "1.0.0", "beta", signer)  # type: ignore[arg-type]


def test_pushed_manifest_is_readable_valid_and_pullable_by_oras(
    registry: object, signer: Signer, tmp_path: Path
) -> None:
    """What we push: the tolerant reader reads it, the published JSON Schema accepts it,
    and oras-py (an independent client) pulls the same bytes."""
    import json

    import jsonschema
    import oras.client

    from ocicore.models import Manifest

    config = _config("oras")
    with RegistryClient(registry.host, credentials=None) as client:  # type: ignore[attr-defined]
        report = publish_version(client, config, "4.0.0", signer)  # type: ignore[arg-type]
        parsed = client.get_manifest(config.release_repository, report.digest).parse()  # type: ignore[attr-defined, arg-type]
        assert isinstance(parsed, Manifest)
        data = client.fetch_blob_bytes(config.release_repository, parsed.config)  # type: ignore[attr-defined]
    release = read_manifest(data)
    assert release.version == "4.0.0" and release.locks is not None
    schema = json.loads(
        (Path(__file__).parents[2] / "schema" / "release-manifest.v1.json").read_text()
    )
    jsonschema.validate(
        json.loads(data), schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    target = f"{registry.host}/{config.release_repository}:4.0.0"  # type: ignore[attr-defined]
    files = oras.client.OrasClient(insecure=True).pull(target=target, outdir=str(tmp_path))
    assert [Path(f).name for f in files] == ["release-manifest.json"]
    assert (tmp_path / "release-manifest.json").read_bytes() == data
    # the config bundle carries a cosign signature by the same key (for Flux's verify)
    from consumer.signatures import (
        SIGNATURE_ANNOTATION,
        SignedPayload,
        TrustStore,
        verify_binding,
    )

    bundle = Digest.parse(release.config.digest)
    with RegistryClient(registry.host, credentials=None) as client:  # type: ignore[attr-defined]
        sig = client.get_manifest(config.config_repository, f"{bundle.tag_form}.sig").parse()  # type: ignore[attr-defined]
        assert isinstance(sig, Manifest)
        signed = [
            SignedPayload(
                client.fetch_blob_bytes(config.config_repository, layer),  # type: ignore[attr-defined]
                (layer.annotations or {})[SIGNATURE_ANNOTATION],
            )
            for layer in sig.layers
        ]
    trust = TrustStore.from_pem(signer.public_pem())
    assert verify_binding(trust, bundle, signed, channel=None, now=datetime.now(UTC))
