"""``ContentStore``: what ``ocicore.copy`` needs from a place that holds OCI content.

Two implementations exist: ``ocicore.client.RegistryClient`` (one registry host) and
``ocicore.layout.OCILayout`` (an OCI image layout directory). Both satisfy this
protocol structurally; a copy works between any two of them.

The contract every implementation keeps:

- ``get_manifest`` returns bytes that hash to the returned digest (by digest: to the
  digest asked for); ``fetch_blob`` moves a blob to ``dest`` only once its digest and
  size match the descriptor, so nothing unverified reaches ``dest``.
- ``push_blob`` and ``push_manifest`` never store content under a digest it does not
  hash to; ``push_manifest`` stores the exact bytes given (digests are preserved).
- Unknown tags, manifests and blobs raise ``ocicore.errors.NotFoundError`` (or a
  subclass of it); ``blob_exists`` answers ``False`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ocicore.client import FetchedManifest
from ocicore.digest import Digest
from ocicore.models import Descriptor

__all__ = ["ContentStore", "FetchedManifest"]


class ContentStore(Protocol):
    """Read and write manifests, blobs and tags, grouped by repository."""

    def resolve(self, repository: str, reference: str | Digest) -> Descriptor:
        """The descriptor of a tag or digest; raises ``NotFoundError`` when unknown."""
        ...

    def get_manifest(self, repository: str, reference: str | Digest) -> FetchedManifest:
        """A manifest or index, its bytes verified against its digest."""
        ...

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        """Whether the blob is present (for ``repository``)."""
        ...

    def fetch_blob(self, repository: str, descriptor: Descriptor, dest: Path) -> None:
        """Write the blob to ``dest``, only once digest and size are verified."""
        ...

    def push_blob(
        self,
        repository: str,
        source: bytes | Path,
        digest: Digest | None = None,
        *,
        mount_from: Sequence[str] = (),
    ) -> str:
        """Make the blob present; ``"skipped"``, ``"mounted"`` or ``"uploaded"``."""
        ...

    def push_manifest(
        self, repository: str, data: bytes, media_type: str, *, tag: str | None = None
    ) -> Digest:
        """Store exactly ``data`` (by digest, and under ``tag`` if given); its digest."""
        ...

    def list_tags(self, repository: str, *, missing_ok: bool = False) -> list[str]:
        """The tags of ``repository``."""
        ...
