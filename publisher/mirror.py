"""``mirror`` a release into another registry or an archive; ``import_archive`` on the
other side of an air gap.

``mirror(src, config_or_repository, selector, dst, trust=…)`` resolves the release (a
version, or a channel; its signature verified with the trust file, as an appliance
would) and copies its whole closure with ``ocicore.copy``, digests preserved:

1. every artifact the release pins (``consumer.verify.pinned_artifacts``): the charts,
   the config bundle and the application images under their tags, the control-plane
   image under the release version (as ``publish`` tags it). Application images on
   another registry that cannot be reached are skipped with a warning; everything
   else must copy;
2. the release manifest, by digest, under its version tag;
3. its signatures (the cosign ``sha256-<hex>.sig`` tag: the publish signature and
   every channel binding);
4. optionally (``history=True``) the channel's promotion records;
5. last, when a channel was mirrored, the channel tag, so a destination channel never
   points at a release whose content is not all there yet.

Repository paths are preserved; only the registry changes. A consumer pointed at the
mirror resolves the same digests: ``ResolvedRelease.locate`` maps the manifest's home
registry to the registry it resolved from. What the destination already holds is
skipped (a re-run copies nothing: zero manifests, zero blob bytes).

An archive is an OCI image layout (``ocicore.layout``) holding several repositories:
each tagged entry of ``index.json`` carries its repository in the
``io.alga.appliance-release.repository`` annotation, written as a tar by
``OCILayout.write_tar``. ``mirror_to_archive`` adds to an existing archive (so one
archive can carry several releases, and a re-run transfers nothing).
``import_archive`` pushes every entry to its repository and tag, in the order the
entries were written (artifacts before the release, the release before its channel).
"""

from __future__ import annotations

import concurrent.futures
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import semver

from consumer.resolve import ResolvedRelease, Resolver
from consumer.signatures import TrustStore
from consumer.verify import PinnedArtifact, pinned_artifacts
from ocicore.client import RegistryClient
from ocicore.copy import CopyResult, copy
from ocicore.errors import (
    AuthenticationError,
    AuthorizationError,
    LayoutError,
    NotFoundError,
    TransportError,
)
from ocicore.jsonutil import load_json_strict
from ocicore.layout import REF_NAME_ANNOTATION, REPOSITORY_ANNOTATION, OCILayout
from ocicore.models import Index
from ocicore.progress import Progress
from ocicore.store import ContentStore
from publisher.release_config import ReleaseConfig

__all__ = [
    "ImportReport",
    "MirrorReport",
    "MirroredArtifact",
    "import_archive",
    "mirror",
    "mirror_to_archive",
]

#: How to reach a registry other than the source (application images hosted elsewhere).
ClientFor = Callable[[str], RegistryClient]
_UNREACHABLE = (NotFoundError, TransportError, AuthenticationError, AuthorizationError)


@dataclass(frozen=True)
class MirroredArtifact:
    """One manifest tree copied (or found already present) at the destination."""

    artifact: str
    repository: str
    digest: str
    tags: tuple[str, ...]
    manifests_copied: int
    blobs_copied: int
    bytes_copied: int

    @property
    def outcome(self) -> str:
        return "copied" if self.manifests_copied or self.blobs_copied else "present"

    @classmethod
    def of(cls, artifact: str, repository: str, result: CopyResult) -> MirroredArtifact:
        return cls(artifact, repository, str(result.digest), result.tags,
                   result.manifests_copied, result.blobs_copied, result.bytes_copied)

    def to_json(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "repository": self.repository,
                "digest": self.digest, "tags": list(self.tags), "outcome": self.outcome,
                "manifestsCopied": self.manifests_copied, "blobsCopied": self.blobs_copied,
                "bytesCopied": self.bytes_copied}


@dataclass
class _Totals:
    artifacts: list[MirroredArtifact] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes_copied(self) -> int:
        return sum(a.bytes_copied for a in self.artifacts)

    @property
    def manifests_copied(self) -> int:
        return sum(a.manifests_copied for a in self.artifacts)

    @property
    def blobs_copied(self) -> int:
        return sum(a.blobs_copied for a in self.artifacts)


@dataclass
class MirrorReport(_Totals):
    """What ``mirror`` copied: per artifact, and warnings for what it skipped."""

    version: str = ""
    digest: str = ""
    channel: str | None = None
    destination: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "digest": self.digest, "channel": self.channel,
                "destination": self.destination, "bytesCopied": self.bytes_copied,
                "manifestsCopied": self.manifests_copied, "blobsCopied": self.blobs_copied,
                "artifacts": [a.to_json() for a in self.artifacts], "warnings": self.warnings}

    def text_lines(self) -> list[str]:
        lines = [f"  {a.outcome:<8} {a.artifact:<26} {a.repository}:{','.join(a.tags) or '-'}"
                 f"  {a.digest}" for a in self.artifacts]
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append(f"mirrored release {self.version} ({self.digest}"
                     f"{', channel ' + self.channel if self.channel else ''}) to "
                     f"{self.destination}: {self.manifests_copied} manifests, "
                     f"{self.blobs_copied} blobs, {self.bytes_copied} bytes copied")
        return lines


@dataclass
class ImportReport(_Totals):
    """What ``import_archive`` pushed."""

    archive: str = ""
    destination: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"archive": self.archive, "destination": self.destination,
                "bytesCopied": self.bytes_copied, "manifestsCopied": self.manifests_copied,
                "blobsCopied": self.blobs_copied,
                "artifacts": [a.to_json() for a in self.artifacts]}

    def text_lines(self) -> list[str]:
        lines = [f"  {a.outcome:<8} {a.repository}:{','.join(a.tags)}  {a.digest}"
                 for a in self.artifacts]
        lines.append(f"imported {len(self.artifacts)} tags from {self.archive} into "
                     f"{self.destination}: {self.manifests_copied} manifests, "
                     f"{self.blobs_copied} blobs, {self.bytes_copied} bytes copied")
        return lines


def resolve_selected(src: RegistryClient, config_or_repository: ReleaseConfig | str,
                     selector: str, trust: TrustStore, *,
                     now: datetime | None = None) -> ResolvedRelease:
    """The release ``selector`` names: a channel (one of the configured channels, or any
    selector that is not SemVer) or a version. Raises what ``Resolver`` raises."""
    if isinstance(config_or_repository, ReleaseConfig):
        repository = config_or_repository.release_repository
        is_channel = selector in config_or_repository.appliance.channels
    else:
        repository = config_or_repository
        is_channel = not _is_semver(selector)
    moment = now or datetime.now(UTC)
    resolver = Resolver(src, repository, trust, state_path=None, clock=lambda: moment)
    if is_channel:
        return resolver.resolve_channel(selector)
    return resolver.resolve_version(selector)


def mirror(
    src: RegistryClient,
    config_or_repository: ReleaseConfig | str,
    selector: str,
    dst: RegistryClient | OCILayout,
    *,
    trust: TrustStore,
    client_for: ClientFor | None = None,
    history: bool = False,
    concurrency: int = 4,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> MirrorReport:
    """Copy release ``selector`` (version or channel) and everything it pins from ``src``
    to ``dst`` (a registry or an OCI layout), digests preserved.

    ``client_for(host)`` reaches registries other than ``src`` (application images
    hosted elsewhere); default: none are reachable. Raises ``SignatureError`` (and the
    other resolve errors) when the release is not trusted, registry and integrity
    errors when a chart, the bundle, the control-plane image, the manifest or its
    signatures cannot be copied.
    """
    resolved = resolve_selected(src, config_or_repository, selector, trust, now=now)
    manifest = resolved.manifest
    report = MirrorReport(version=manifest.version, digest=str(resolved.digest),
                          channel=resolved.channel, destination=_describe(dst))

    def source_for(host: str) -> RegistryClient:
        if host == src.registry:
            return src
        if client_for is None:
            raise TransportError(f"{host} is not the source registry and no client reaches it")
        return client_for(host)

    def copy_artifact(item: PinnedArtifact) -> MirroredArtifact | str:
        ref = item.reference
        tags = [ref.tag] if ref.tag else [manifest.version]  # the control plane: its version
        try:
            result = copy(source_for(ref.registry), ref.repository, item.expected, dst,
                          ref.repository, tags=tags, concurrency=concurrency,
                          progress=progress)
        except _UNREACHABLE as exc:
            if item.artifact.startswith("image ") and ref.registry != src.registry:
                return f"{item.artifact} {ref} skipped: {exc.message}"
            raise
        return MirroredArtifact.of(item.artifact, ref.repository, result)

    # 1. the pinned artifacts, in parallel (each copy bounds its own blob transfers)
    pinned = pinned_artifacts(resolved)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency),
                                               thread_name_prefix="mirror") as pool:
        outcomes = list(pool.map(copy_artifact, pinned))
    for outcome in outcomes:
        if isinstance(outcome, str):
            report.warnings.append(outcome)
        else:
            report.artifacts.append(outcome)
    # 2.-4. the release manifest, its signatures, the channel's records
    repository = resolved.repository
    report.artifacts.append(MirroredArtifact.of("release manifest", repository, copy(
        src, repository, resolved.digest, dst, repository, tags=[manifest.version],
        concurrency=concurrency, progress=progress)))
    report.artifacts.append(MirroredArtifact.of("signatures", repository, copy(
        src, repository, f"{resolved.digest.tag_form}.sig", dst, repository,
        concurrency=concurrency, progress=progress)))
    if history and resolved.channel is not None:
        prefix = f"promotion-{resolved.channel}-"
        for tag in sorted(t for t in src.list_tags(repository) if t.startswith(prefix)):
            report.artifacts.append(MirroredArtifact.of(f"promotion record {tag[len(prefix):]}",
                                                        repository, copy(
                src, repository, tag, dst, repository, concurrency=concurrency)))
    # 5. the channel, last
    if resolved.channel is not None:
        report.artifacts.append(MirroredArtifact.of(f"channel {resolved.channel}", repository,
                                                    copy(src, repository, resolved.digest, dst,
                                                         repository, tags=[resolved.channel])))
    return report


def mirror_to_archive(
    src: RegistryClient,
    config_or_repository: ReleaseConfig | str,
    selector: str,
    archive: Path,
    *,
    trust: TrustStore,
    client_for: ClientFor | None = None,
    history: bool = False,
    concurrency: int = 4,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> MirrorReport:
    """``mirror`` into the OCI layout tar ``archive``, adding to it when it exists.

    The layout is assembled in a temporary directory next to ``archive`` and the tar
    replaces ``archive`` only once complete. Raises what ``mirror`` raises, and
    ``LayoutError`` when an existing ``archive`` is not a layout tar.
    """
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{archive.name}.layout-", dir=archive.parent))
    try:
        if archive.exists():
            layout = OCILayout.from_tar(archive, work / "layout")
        else:
            layout = OCILayout(work / "layout", create=True)
        report = mirror(src, config_or_repository, selector, layout, trust=trust,
                        client_for=client_for, history=history, concurrency=concurrency,
                        now=now, progress=progress)
        layout.write_tar(archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.destination = str(archive)
    return report


def import_archive(
    archive: Path,
    dst: ContentStore,
    *,
    concurrency: int = 4,
    workdir: Path | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Push every tagged entry of the layout tar ``archive`` to its repository and tag at
    ``dst``, in the archive's order; what ``dst`` holds is skipped.

    Raises ``LayoutError`` for an unsafe or malformed archive, or an entry that names
    no repository (written by another tool: use ``skopeo copy`` for those), and the
    destination's errors.
    """
    archive = Path(archive)
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=workdir))
    report = ImportReport(archive=str(archive), destination=_describe(dst))
    try:
        layout = OCILayout.from_tar(archive, work / "layout")
        for repository, tag in _entries(layout):
            result = copy(layout, repository, tag, dst, repository, tags=[tag],
                          concurrency=concurrency, progress=progress)
            report.artifacts.append(MirroredArtifact.of(f"{repository}:{tag}", repository,
                                                        result))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _entries(layout: OCILayout) -> list[tuple[str, str]]:
    """(repository, tag) of every ``index.json`` entry, in order."""
    doc = load_json_strict((layout.path / "index.json").read_bytes(),
                           what=f"index.json of {layout.path}")
    index = Index.model_validate(doc)
    entries = []
    for descriptor in index.manifests:
        annotations = descriptor.annotations or {}
        tag = annotations.get(REF_NAME_ANNOTATION)
        repository = annotations.get(REPOSITORY_ANNOTATION)
        if not tag or not repository:
            raise LayoutError(
                f"entry {descriptor.digest} of the archive names no repository and tag",
                hint="import archives written by 'appliance-release mirror --to-archive'")
        entries.append((repository, tag))
    return entries


def _describe(dst: ContentStore) -> str:
    return dst.registry if isinstance(dst, RegistryClient) else str(getattr(dst, "path", dst))


def _is_semver(value: str) -> bool:
    try:
        semver.Version.parse(value)
    except ValueError:
        return False
    return True
