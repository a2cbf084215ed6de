"""Trust rules for release signatures: each failure is refused with its own reason."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from consumer.signatures import (
    SignatureError,
    SignedPayload,
    TrustFileError,
    TrustStore,
    build_payload,
    verify_binding,
)
from ocicore.digest import Digest
from publisher.signing import Signer, SigningKeyError, generate_keypair, load_signer

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DIGEST = Digest.of(b"release manifest")


def _signer() -> Signer:
    return Signer(ec.generate_private_key(ec.SECP256R1()))


def _signed(signer: Signer, digest: Digest = DIGEST, **claims: object) -> SignedPayload:
    payload = build_payload("reg/alga/appliance-release", digest, **claims)  # type: ignore[arg-type]
    return SignedPayload(payload, signer.sign(payload))


def test_valid_binding_is_accepted_with_any_trusted_key() -> None:
    old, new = _signer(), _signer()
    trust = TrustStore.from_pem(old.public_pem() + new.public_pem())
    binding = verify_binding(trust, DIGEST, [_signed(new, channel="stable", sequence=3)],
                             channel="stable", now=NOW)
    assert binding.keyid == new.keyid and binding.claims.sequence == 3


def test_unsigned_release_is_refused() -> None:
    trust = TrustStore.from_pem(_signer().public_pem())
    with pytest.raises(SignatureError, match="is not signed"):
        verify_binding(trust, DIGEST, [], channel="stable", now=NOW)


def test_tampered_payload_and_signature_are_refused() -> None:
    signer = _signer()
    trust = TrustStore.from_pem(signer.public_pem())
    good = _signed(signer, channel="stable")
    tampered = SignedPayload(good.payload.replace(b"stable", b"stablf"), good.signature_b64)
    with pytest.raises(SignatureError, match="verifies with a trusted key"):
        verify_binding(trust, DIGEST, [tampered], channel="stable", now=NOW)
    raw = bytearray(base64.b64decode(good.signature_b64))
    raw[-1] ^= 1
    flipped = SignedPayload(good.payload, base64.b64encode(bytes(raw)).decode())
    with pytest.raises(SignatureError, match="verifies with a trusted key"):
        verify_binding(trust, DIGEST, [flipped], channel="stable", now=NOW)


def test_unknown_key_is_refused() -> None:
    trust = TrustStore.from_pem(_signer().public_pem())
    with pytest.raises(SignatureError, match="verifies with a trusted key"):
        verify_binding(trust, DIGEST, [_signed(_signer(), channel="stable")],
                       channel="stable", now=NOW)


def test_binding_for_another_channel_is_refused() -> None:
    signer = _signer()
    trust = TrustStore.from_pem(signer.public_pem())
    with pytest.raises(SignatureError, match="signed for channel 'nightly', not for channel"):
        verify_binding(trust, DIGEST, [_signed(signer, channel="nightly")],
                       channel="stable", now=NOW)


def test_expired_binding_is_refused() -> None:
    signer = _signer()
    trust = TrustStore.from_pem(signer.public_pem())
    expired = _signed(signer, channel="stable", expires=NOW - timedelta(seconds=1))
    with pytest.raises(SignatureError, match="expired at 2026-11-27T11:59:59Z"):
        verify_binding(trust, DIGEST, [expired], channel="stable", now=NOW)
    fresh = _signed(signer, channel="stable", expires=NOW + timedelta(days=1))
    assert verify_binding(trust, DIGEST, [expired, fresh], channel="stable", now=NOW)


def test_signature_over_another_digest_is_refused() -> None:
    signer = _signer()
    trust = TrustStore.from_pem(signer.public_pem())
    other = _signed(signer, Digest.of(b"other"), channel="stable")
    with pytest.raises(SignatureError, match="signs another digest"):
        verify_binding(trust, DIGEST, [other], channel="stable", now=NOW)


def test_trust_file_errors() -> None:
    with pytest.raises(TrustFileError, match="no PEM public key"):
        TrustStore.from_pem(b"not a key")
    rsa_pem = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(TrustFileError, match="not an ECDSA P-256"):
        TrustStore.from_pem(rsa_pem)
    many = b"".join(_signer().public_pem() for _ in range(9))
    with pytest.raises(TrustFileError, match="over the limit"):
        TrustStore.from_pem(many)
    broken = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(TrustFileError, match="not a valid PEM public key"):
        TrustStore.from_pem(broken)


def test_keygen_with_password_round_trip(tmp_path: Path) -> None:
    priv, pub = tmp_path / "k.key", tmp_path / "k.pub"
    signer = generate_keypair(priv, pub, b"pw")
    assert priv.stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED" in priv.read_bytes()
    assert load_signer(priv, b"pw").keyid == signer.keyid
    assert TrustStore.from_pem(pub.read_bytes()).keyids == [signer.keyid]
    with pytest.raises(SigningKeyError, match="wrong password"):
        load_signer(priv, b"nope")
    with pytest.raises(SigningKeyError, match="encrypted and no password"):
        load_signer(priv, None)
    with pytest.raises(SigningKeyError, match="already exists"):
        generate_keypair(priv, pub, None)
