"""Resolve a channel, version or digest to a verified, trusted release.

``Resolver`` does the I/O (DESIGN.md §5): one HEAD of the channel tag gives the
digest; the manifest and its config blob are fetched by digest and checked by the
client; the config blob is read by the tolerant reader; the cosign signatures under
``sha256-<hex>.sig`` are fetched and handed to the pure trust rules
(``consumer.signatures.verify_binding``); anti-rollback compares with the local state
(``consumer.state``). Nothing is written until ``record_installed``.

A warm check of an unchanged channel (``check``) costs one request: the HEAD, with
the token cached from the previous call.

Registry rewrite: artifact references in a manifest name the registry they were
published to. Every reference on the manifest's home registry (the host of
``config.repository``) is fetched from the registry the release was resolved from,
so a mirror works with only the registry address changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from consumer.manifest import ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, ReleaseManifest, read_manifest
from consumer.signatures import (
    MAX_PAYLOAD_BYTES,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    ChannelBinding,
    SignatureError,
    SignedPayload,
    TrustStore,
    verify_binding,
)
from consumer.state import (
    InstalledRelease,
    RollbackError,
    check_rollback,
    load_state,
    record_install,
    save_state,
    semver_lt,
)
from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.errors import InvalidInputError, NotFoundError
from ocicore.models import Descriptor, Manifest
from ocicore.reference import Reference, check_tag

log = logging.getLogger(__name__)


class NotAReleaseError(InvalidInputError):
    """The tag points at something that is not a release manifest artifact."""


@dataclass(frozen=True)
class ResolvedRelease:
    """A release whose manifest bytes, digest and signature binding have been verified."""

    registry: str
    repository: str
    selector: str
    channel: str | None
    digest: Digest
    manifest: ReleaseManifest
    manifest_bytes: bytes
    binding: ChannelBinding

    @property
    def home_registry(self) -> str:
        """The registry the manifest's references name (where it was published)."""
        return Reference.parse(self.manifest.config.repository, default_tag=None).registry

    def locate(self, reference: str) -> Reference:
        """``reference`` (``oci://`` allowed) with the home registry replaced by the one
        this release was resolved from."""
        ref = Reference.parse(reference, default_tag=None)
        if ref.registry == self.home_registry:
            return Reference(self.registry, ref.repository, ref.tag, ref.digest)
        return ref


class Resolver:
    """Resolves releases from ``repository`` (``<ns>/<appliance>-release``) on one registry.

    ``state_path`` is the anti-rollback state file; ``None`` disables the check (for
    operators inspecting a registry, never on an appliance).
    """

    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        trust: TrustStore,
        *,
        state_path: Path | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.repository = repository
        self.trust = trust
        self.state_path = state_path
        self._clock = clock
        self._last: dict[str, ResolvedRelease] = {}

    def resolve_channel(self, channel: str, *, allow_downgrade: bool = False) -> ResolvedRelease:
        """The release ``channel`` points at, signed for that channel and not older than
        what this appliance installed from it.

        Raises ``NotFoundError``, ``IntegrityError``, ``ManifestError``, ``NotAReleaseError``,
        ``SignatureError`` or ``RollbackError``, each naming what was wrong.
        """
        check_tag(channel)
        digest = self.client.resolve(self.repository, channel).digest
        cached = self._last.get(channel)
        if cached is not None and cached.digest == digest:
            return cached
        resolved = self._load(digest, selector=channel, channel=channel)
        self._check_rollback(resolved, allow_downgrade)
        self._last[channel] = resolved
        return resolved

    def check(self, channel: str) -> tuple[Digest, bool]:
        """One request: the channel's current digest and whether it changed since the
        last ``resolve_channel`` of this resolver."""
        check_tag(channel)
        digest = self.client.resolve(self.repository, channel).digest
        cached = self._last.get(channel)
        return digest, cached is None or cached.digest != digest

    def resolve_version(self, version: str) -> ResolvedRelease:
        """The release published as ``version`` (its immutable version tag), signed."""
        check_tag(version)
        digest = self.client.resolve(self.repository, version).digest
        resolved = self._load(digest, selector=version, channel=None)
        if resolved.manifest.version != version:
            raise NotAReleaseError(
                f"tag {self.repository}:{version} holds release {resolved.manifest.version}",
                hint="the version tag was moved; report it to the release team",
            )
        return resolved

    def resolve_digest(self, digest: Digest) -> ResolvedRelease:
        """The release with manifest ``digest``, signed by a trusted key."""
        return self._load(digest, selector=str(digest), channel=None)

    def record_installed(self, resolved: ResolvedRelease) -> None:
        """Write the anti-rollback state after a successful install (atomically)."""
        if self.state_path is None or resolved.channel is None:
            return
        state = load_state(self.state_path)
        release = InstalledRelease(
            version=resolved.manifest.version,
            sequence=resolved.manifest.sequence,
            digest=resolved.digest,
            installedAt=self._clock(),
        )
        save_state(self.state_path, record_install(state, resolved.channel, release))

    # -- internals -----------------------------------------------------------------

    def _load(self, digest: Digest, *, selector: str, channel: str | None) -> ResolvedRelease:
        what = f"{self.client.registry}/{self.repository}@{digest}"
        fetched = self.client.get_manifest(self.repository, digest)
        parsed = fetched.parse()
        if not isinstance(parsed, Manifest) or not is_release_artifact(parsed):
            raise NotAReleaseError(
                f"{what} ({selector}) is not a release manifest (artifactType "
                f"{getattr(parsed, 'artifact_type', None)!r})",
                hint=f"the tag must point at an artifact of type {ARTIFACT_TYPE}",
            )
        config = self.client.fetch_blob_bytes(self.repository, parsed.config)
        manifest = read_manifest(config, what=f"release manifest {what}")
        binding = self._binding(digest, channel)
        log.info("resolved %s to %s (version %s, signed by key %s)", selector, digest,
                 manifest.version, binding.keyid)
        return ResolvedRelease(self.client.registry, self.repository, selector, channel, digest,
                               manifest, config, binding)

    def _binding(self, digest: Digest, channel: str | None) -> ChannelBinding:
        """The first valid binding, newest signature first (a promotion appends the
        channel's binding last, so a cold resolve usually fetches one payload); when
        none is valid, the pure rules get all of them and name the closest miss."""
        fetched: list[SignedPayload] = []
        for layer in reversed(self._signature_layers(digest)):
            payload = self.client.fetch_blob_bytes(self.repository, layer,
                                                   max_bytes=MAX_PAYLOAD_BYTES)
            signed = SignedPayload(payload, (layer.annotations or {})[SIGNATURE_ANNOTATION])
            fetched.append(signed)
            try:
                return verify_binding(self.trust, digest, [signed], channel=channel,
                                      now=self._clock())
            except SignatureError:
                continue
        return verify_binding(self.trust, digest, fetched, channel=channel, now=self._clock())

    def _signature_layers(self, digest: Digest) -> list[Descriptor]:
        try:
            fetched = self.client.get_manifest(self.repository, f"{digest.tag_form}.sig")
        except NotFoundError:
            return []
        parsed = fetched.parse()
        if not isinstance(parsed, Manifest):
            return []
        return [layer for layer in parsed.layers
                if layer.media_type == SIMPLE_SIGNING_MEDIA_TYPE
                and (layer.annotations or {}).get(SIGNATURE_ANNOTATION)]

    def _check_rollback(self, resolved: ResolvedRelease, allow_downgrade: bool) -> None:
        if self.state_path is None or resolved.channel is None:
            return
        state = load_state(self.state_path)
        manifest = resolved.manifest
        check_rollback(state, resolved.channel, manifest.version, manifest.sequence,
                       resolved.digest, allow_downgrade=allow_downgrade)
        current = state.channels.get(resolved.channel)
        required = manifest.requires.min_version if manifest.requires else None
        if (current is not None and required is not None and not allow_downgrade
                and semver_lt(current.version, required)):
            raise RollbackError(
                f"release {manifest.version} requires at least {required} installed, "
                f"this appliance runs {current.version}",
                hint=f"install {required} (or a later release before {manifest.version}) first",
            )


def is_release_artifact(manifest: Manifest) -> bool:
    """Whether ``manifest`` is a release-manifest artifact (by artifactType or, for
    artifacts written before artifactType existed, by its config media type)."""
    return (manifest.artifact_type == ARTIFACT_TYPE
            or manifest.config.media_type == CONFIG_MEDIA_TYPE)
