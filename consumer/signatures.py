"""Cosign-format signatures and the trust rules that bind a release to a channel.

Format (cosign's key-based "simple signing", DESIGN.md §2): the signed payload is a
JSON document ``{"critical": {"identity": {"docker-reference": …}, "image":
{"docker-manifest-digest": "sha256:…"}, "type": "cosign container image signature"},
"optional": {…}}``; the signature is ECDSA P-256 over SHA-256 of the payload bytes,
ASN.1 DER, base64 in the layer annotation ``dev.cosignproject.cosign/signature``.
Our ``optional`` claims: ``channel``, ``sequence``, ``created``, ``expires`` (RFC 3339)
and ``version``.

``verify_binding`` is pure: it takes the payload bytes and signatures already
downloaded and the trusted keys, and raises ``SignatureError`` with the most useful
one-line reason; fetching lives with the resolver.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ocicore.digest import Digest
from ocicore.errors import InvalidInputError, ToolkitError
from ocicore.fsutil import rfc3339
from ocicore.jsonutil import canonical_json, load_json_strict

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
#: Payloads are small; anything larger is refused before parsing.
MAX_PAYLOAD_BYTES = 64 * 1024
#: A trust file may hold this many keys (rotation keeps old and new side by side).
MAX_TRUSTED_KEYS = 8


class SignatureError(ToolkitError):
    """No signature establishes trust in a release (or binds it to the channel)."""

    exit_code = 5


class TrustFileError(InvalidInputError):
    """The trust file of public keys is unusable."""


def keyid_of(public_key: ec.EllipticCurvePublicKey) -> str:
    """Key id: the first 16 hex characters of SHA-256 over the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


@dataclass(frozen=True)
class TrustedKey:
    keyid: str
    public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class TrustStore:
    """The public keys an appliance trusts (any one of them may sign)."""

    keys: tuple[TrustedKey, ...]

    @classmethod
    def from_pem(cls, data: bytes, *, what: str = "trust file") -> TrustStore:
        """Load one or more PEM public keys (ECDSA P-256) concatenated in ``data``.

        Raises ``TrustFileError`` for no key, a non-P-256 key, a malformed block or
        more than ``MAX_TRUSTED_KEYS`` keys.
        """
        blocks = _pem_blocks(data)
        if not blocks:
            raise TrustFileError(f"{what} holds no PEM public key",
                                 hint="write the release signing public key(s) into it")
        if len(blocks) > MAX_TRUSTED_KEYS:
            raise TrustFileError(f"{what} holds {len(blocks)} keys, over the limit of "
                                 f"{MAX_TRUSTED_KEYS}", hint="remove retired keys")
        keys: list[TrustedKey] = []
        for i, block in enumerate(blocks, 1):
            try:
                key = serialization.load_pem_public_key(block)
            except ValueError:
                raise TrustFileError(f"{what}: key {i} is not a valid PEM public key") from None
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                raise TrustFileError(f"{what}: key {i} is not an ECDSA P-256 public key",
                                     hint="cosign-format release keys are ECDSA P-256")
            keys.append(TrustedKey(keyid_of(key), key))
        return cls(tuple(keys))

    @property
    def keyids(self) -> list[str]:
        return [k.keyid for k in self.keys]


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks, current = [], []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"-----BEGIN "):
            current = [line]
        elif current:
            current.append(line)
            if line.startswith(b"-----END "):
                blocks.append(b"".join(current))
                current = []
    return blocks


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class _Identity(_Wire):
    docker_reference: str = Field(alias="docker-reference")


class _Image(_Wire):
    docker_manifest_digest: Digest = Field(alias="docker-manifest-digest")


class _Critical(_Wire):
    identity: _Identity
    image: _Image
    type: str


class BindingClaims(_Wire):
    """Our claims in the payload's ``optional`` section."""

    channel: str | None = None
    sequence: int | None = None
    version: str | None = None
    created: datetime | None = None
    expires: datetime | None = None


class SignaturePayload(_Wire):
    critical: _Critical
    optional: BindingClaims | None = None


def build_payload(
    repository: str,
    digest: Digest,
    *,
    channel: str | None = None,
    sequence: int | None = None,
    version: str | None = None,
    created: datetime | None = None,
    expires: datetime | None = None,
) -> bytes:
    """The canonical simple-signing payload binding ``digest`` (and optionally a channel)."""
    optional: dict[str, Any] = {}
    if channel is not None:
        optional["channel"] = channel
    if sequence is not None:
        optional["sequence"] = sequence
    if version is not None:
        optional["version"] = version
    if created is not None:
        optional["created"] = _stamp(created)
    if expires is not None:
        optional["expires"] = _stamp(expires)
    doc: dict[str, Any] = {
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": str(digest)},
            "type": COSIGN_SIGNATURE_TYPE,
        },
        "optional": optional or None,
    }
    return canonical_json(doc)


def _stamp(moment: datetime) -> str:
    try:
        return rfc3339(moment)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


@dataclass(frozen=True)
class SignedPayload:
    """One signature as downloaded: the payload bytes and the base64 signature."""

    payload: bytes
    signature_b64: str


@dataclass(frozen=True)
class ChannelBinding:
    """A verified statement: ``keyid`` signed ``digest`` (for ``channel``, if any)."""

    digest: Digest
    keyid: str
    claims: BindingClaims


def verify_binding(
    trust: TrustStore,
    digest: Digest,
    signatures: Sequence[SignedPayload],
    *,
    channel: str | None,
    now: datetime,
) -> ChannelBinding:
    """The first signature, by a trusted key, over ``digest`` (bound to ``channel`` when
    given) that has not expired at ``now``.

    Raises ``SignatureError`` naming the closest miss: no signatures; none by a trusted
    key (tampered or unknown key); signed for another channel; expired.
    """
    if not signatures:
        raise SignatureError(f"release {digest} is not signed",
                             hint="publish it with a signing key (appliance-release publish)")
    misses: list[tuple[int, str]] = []
    for signed in signatures:
        payload, reason = _check_one(trust, digest, signed)
        if payload is None:
            misses.append((0, reason))
            continue
        claims = payload.optional or BindingClaims()
        keyid = reason
        if channel is not None and claims.channel != channel:
            bound = f"channel {claims.channel!r}" if claims.channel else "no channel"
            misses.append((1, f"release {digest} is signed for {bound}, not for channel "
                              f"{channel!r}"))
            continue
        if claims.expires is not None and _aware(claims.expires) <= now:
            misses.append((2, f"the binding of release {digest} to channel {channel!r} "
                              f"expired at {_stamp(_aware(claims.expires))}"))
            continue
        return ChannelBinding(digest, keyid, claims)
    misses.sort(key=lambda m: m[0], reverse=True)
    hint = {
        0: f"trusted key ids: {', '.join(trust.keyids)}; check the trust file or re-sign",
        1: "promote the release to this channel (appliance-release promote)",
        2: "re-promote the release to renew the binding",
    }[misses[0][0]]
    raise SignatureError(misses[0][1], hint=hint)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _check_one(
    trust: TrustStore, digest: Digest, signed: SignedPayload
) -> tuple[SignaturePayload | None, str]:
    """(payload, keyid) when valid, else (None, reason)."""
    try:
        signature = base64.b64decode(signed.signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return None, f"a signature on release {digest} is not valid base64"
    keyid = next((k.keyid for k in trust.keys if _verifies(k, signed.payload, signature)), None)
    if keyid is None:
        return None, (f"no signature on release {digest} verifies with a trusted key "
                      f"({len(trust.keys)} trusted)")
    try:
        doc = load_json_strict(signed.payload, what="signature payload",
                               max_bytes=MAX_PAYLOAD_BYTES)
        payload = SignaturePayload.model_validate(doc)
    except (ToolkitError, ValidationError):
        return None, f"a signature on release {digest} has a malformed payload"
    if payload.critical.type != COSIGN_SIGNATURE_TYPE:
        return None, f"a signature on release {digest} has type {payload.critical.type!r}"
    if payload.critical.image.docker_manifest_digest != digest:
        return None, (f"a signature stored for release {digest} signs another digest "
                      f"({payload.critical.image.docker_manifest_digest})")
    return payload, keyid


def _verifies(key: TrustedKey, payload: bytes, signature: bytes) -> bool:
    try:
        key.public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
