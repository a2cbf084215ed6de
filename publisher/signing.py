"""Release signing keys and cosign-format signatures stored in the registry.

Keys are ECDSA P-256. ``generate_keypair`` writes a PKCS#8 private key (encrypted
with the password when one is given; note: PKCS#8, not cosign's own encrypted key
container, so sign with this tool) and a SubjectPublicKeyInfo public key that
``cosign verify --key`` accepts. Signatures are appended under the cosign tag
``sha256-<hex>.sig`` of the signed manifest's repository: an OCI manifest whose
layers are simple-signing payloads, each with its signature annotation.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consumer.signatures import SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, keyid_of
from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.errors import InvalidInputError, NotFoundError
from ocicore.fsutil import write_atomic
from ocicore.jsonutil import canonical_json
from ocicore.models import OCI_IMAGE_CONFIG, OCI_MANIFEST, Descriptor, Manifest


class SigningKeyError(InvalidInputError):
    """The signing key cannot be read or used."""


@dataclass(frozen=True)
class Signer:
    """A loaded private key."""

    private_key: ec.EllipticCurvePrivateKey

    @property
    def keyid(self) -> str:
        return keyid_of(self.private_key.public_key())

    def sign(self, payload: bytes) -> str:
        """Base64 of the DER ECDSA-P256/SHA-256 signature over ``payload``."""
        # RFC 6979 deterministic ECDSA: signing the same payload twice gives the same
        # signature, so a re-run of a publish appends nothing new.
        algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        signature = self.private_key.sign(payload, algorithm)
        return base64.b64encode(signature).decode("ascii")

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_keypair(private_path: Path, public_path: Path, password: bytes | None) -> Signer:
    """Write a new key pair (private file mode 0600); refuses to overwrite either file."""
    for path in (private_path, public_path):
        if path.exists():
            raise SigningKeyError(f"{path} already exists", hint="choose another path or "
                                  "remove the old key deliberately")
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    write_atomic(private_path, private_pem, mode=0o600)
    signer = Signer(key)
    write_atomic(public_path, signer.public_pem())
    return signer


def load_signer(path: Path, password: bytes | None) -> Signer:
    """Load a PEM private key; raises ``SigningKeyError`` naming the problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc.strerror}",
                              hint="generate one with 'appliance-release keygen'") from None
    try:
        key = serialization.load_pem_private_key(data, password=password or None)
    except TypeError:
        raise SigningKeyError(
            f"the signing key {path} is encrypted and no password was given"
            if not password else f"the signing key {path} is not encrypted; drop the password",
            hint="set APPLIANCE_RELEASE_KEY_PASSWORD",
        ) from None
    except ValueError:
        raise SigningKeyError(f"cannot load the signing key {path}: wrong password or not a "
                              "PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SigningKeyError(f"the signing key {path} is not an ECDSA P-256 key")
    return Signer(key)


def signature_tag(digest: Digest) -> str:
    """Cosign's tag for the signatures of ``digest``: ``sha256-<hex>.sig``."""
    return f"{digest.tag_form}.sig"


def append_signature(
    client: RegistryClient, repository: str, digest: Digest, payload: bytes, signature_b64: str
) -> Digest:
    """Add one signature layer to the ``.sig`` manifest of ``digest`` (creating it).

    An identical payload+signature already present is not added twice. Returns the
    digest of the signature manifest now under the tag.
    """
    tag = signature_tag(digest)
    layers: list[Descriptor] = []
    try:
        existing = client.get_manifest(repository, tag).parse()
        if isinstance(existing, Manifest):
            layers = list(existing.layers)
    except NotFoundError:
        pass
    layer = Descriptor.of(SIMPLE_SIGNING_MEDIA_TYPE, payload,
                          annotations={SIGNATURE_ANNOTATION: signature_b64})
    if any(d.digest == layer.digest and d.annotations == layer.annotations for d in layers):
        return client.resolve(repository, tag).digest
    layers.append(layer)
    client.push_blob(repository, payload)
    config = canonical_json({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in layers]},
    })
    client.push_blob(repository, config)
    manifest = Manifest(
        schema_version=2, media_type=OCI_MANIFEST,
        config=Descriptor.of(OCI_IMAGE_CONFIG, config), layers=layers,
    )
    return client.push_manifest(repository, manifest.to_json(), OCI_MANIFEST, tag=tag)
