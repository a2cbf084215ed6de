"""Pushing under immutable version tags.

A version tag, once written, never changes: pushing identical content again is a
no-op that uploads nothing; pushing different content under it is refused with both
digests named (there is no ``--force`` for version tags).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ocicore.digest import Digest
from ocicore.errors import NotFoundError, ToolkitError
from ocicore.models import Descriptor
from ocicore.store import ContentStore


class ImmutableTagError(ToolkitError):
    """A version tag already holds different content."""

    exit_code = 7


@dataclass(frozen=True)
class PushResult:
    repository: str
    tag: str
    digest: Digest
    #: ``"pushed"``, or ``"unchanged"`` when the tag already held exactly this content.
    outcome: str


def push_immutable(
    store: ContentStore,
    repository: str,
    tag: str,
    blobs: Sequence[tuple[bytes | Path, Descriptor]],
    manifest: bytes,
    media_type: str,
    *,
    what: str,
) -> PushResult:
    """Push ``blobs`` then ``manifest`` under ``tag``, unless the tag already holds it.

    Raises ``ImmutableTagError`` when ``tag`` holds another manifest.
    """
    digest = Digest.of(manifest)
    try:
        existing: Digest | None = store.resolve(repository, tag).digest
    except NotFoundError:
        existing = None
    if existing == digest:
        return PushResult(repository, tag, digest, "unchanged")
    if existing is not None:
        raise ImmutableTagError(
            f"{what} {repository}:{tag} already exists as {existing}; the new content is "
            f"{digest}",
            hint="version tags are immutable: bump the version (or revert the change)",
        )
    for data, descriptor in blobs:
        store.push_blob(repository, data, descriptor.digest)
    store.push_manifest(repository, manifest, media_type, tag=tag)
    return PushResult(repository, tag, digest, "pushed")
