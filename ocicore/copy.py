"""``copy``: a manifest or index and everything it references, between two stores.

Either side is any ``ContentStore``: a ``RegistryClient`` (one registry host) or an
``OCILayout``. Digests are preserved: the exact manifest bytes read from the source
(verified against their digest) are what is pushed.

Order, so that the destination never holds a manifest whose content is incomplete:
every manifest of the tree is read first (an index's children recursively); then all
blobs of the tree are transferred in parallel (at most ``concurrency`` at a time,
largest first); then the manifests are pushed by digest, children before their index;
then the tags. What the destination already has is skipped: a manifest present there
skips its whole subtree, a blob present there (``blob_exists``) is not transferred.

How one blob travels:

- registry → registry: streamed through a temporary file (never held in memory); when
  source and destination are the same client and the repositories differ, a
  cross-repository mount is asked for first, so nothing is downloaded or uploaded
  unless the registry declines;
- layout → anything: pushed straight from the layout's blob file (the destination
  hashes what it receives and refuses a mismatch);
- anything → layout: fetched straight into the layout's blob path (the source verifies
  digest and size before the file is moved into place).

Progress: one report per blob under the key ``copy:<digest>`` (``start`` with its size,
``advance`` by the size when done, ``finish`` with ``"done"``, ``"skipped"``,
``"mounted"`` or ``"failed"``). Byte-level progress comes from the stores' own
``progress`` objects.
"""

from __future__ import annotations

import concurrent.futures
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ocicore.client import FetchedManifest, RegistryClient
from ocicore.digest import Digest
from ocicore.errors import IntegrityError, InvalidInputError, NotFoundError
from ocicore.layout import OCILayout
from ocicore.models import Descriptor, Index, Manifest
from ocicore.progress import NoProgress, Progress
from ocicore.reference import check_repository, check_tag
from ocicore.store import ContentStore

__all__ = ["MAX_INDEX_DEPTH", "CopyResult", "copy"]

#: Indexes nested deeper than this are refused (real images use one level).
MAX_INDEX_DEPTH = 8
_FOREIGN_MARKERS = ("nondistributable", "foreign")


@dataclass(frozen=True)
class CopyResult:
    """What a ``copy`` did. ``bytes_copied`` counts blob bytes actually transferred."""

    digest: Digest
    media_type: str
    size: int
    tags: tuple[str, ...]
    manifests_copied: int
    manifests_skipped: int
    blobs_copied: int
    blobs_skipped: int
    blobs_mounted: int
    bytes_copied: int


@dataclass
class _Plan:
    """The manifests to push (children first) and the distinct blobs they need."""

    manifests: list[FetchedManifest] = field(default_factory=list)
    blobs: dict[Digest, Descriptor] = field(default_factory=dict)
    skipped_manifests: int = 0


@dataclass
class _Tally:
    copied: int = 0
    skipped: int = 0
    mounted: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, size: int) -> None:
        with self.lock:
            if outcome == "uploaded":
                self.copied += 1
                self.bytes += size
            elif outcome == "mounted":
                self.mounted += 1
            else:
                self.skipped += 1


def copy(
    src: ContentStore,
    src_repo: str,
    reference: str | Digest,
    dst: ContentStore,
    dst_repo: str,
    *,
    tags: Sequence[str] | None = None,
    concurrency: int = 4,
    progress: Progress | None = None,
    tmpdir: Path | None = None,
) -> CopyResult:
    """Copy the manifest or index ``src_repo:reference`` and all it references to
    ``dst_repo``, preserving its digest.

    ``tags`` are applied at the destination; ``None`` (the default) means the source
    tag when ``reference`` is a tag and no tag when it is a digest; ``()`` applies none.
    ``tmpdir`` holds the per-blob temporary files of registry-to-registry copies.

    Raises ``NotFoundError`` when the source lacks the reference or content,
    ``IntegrityError`` (``DigestMismatchError``, ``SizeLimitError``) when content does
    not match its descriptor, ``LayoutError`` for a malformed layout, and the
    destination's errors when it refuses a push. On failure nothing is tagged; blobs
    already transferred stay (a re-run skips them).
    """
    if concurrency < 1:
        raise InvalidInputError(f"concurrency must be at least 1, not {concurrency}")
    check_repository(src_repo)
    check_repository(dst_repo)
    apply_tags = (
        tuple(tags) if tags is not None else ((reference,) if isinstance(reference, str) else ())
    )
    for tag in apply_tags:
        check_tag(tag)
    copier = _Copier(src, src_repo, dst, dst_repo, progress or NoProgress(), tmpdir)

    root = src.get_manifest(src_repo, reference)
    plan = _Plan()
    copier.collect(root, plan, depth=0)
    tally = copier.transfer_all(
        sorted(plan.blobs.values(), key=lambda d: d.size, reverse=True), concurrency
    )
    for fetched in plan.manifests:
        dst.push_manifest(dst_repo, fetched.data, fetched.media_type)
    for tag in apply_tags:
        if not _points_at(dst, dst_repo, tag, root.digest):
            dst.push_manifest(dst_repo, root.data, root.media_type, tag=tag)
    return CopyResult(
        digest=root.digest,
        media_type=root.media_type,
        size=len(root.data),
        tags=apply_tags,
        manifests_copied=len(plan.manifests),
        manifests_skipped=plan.skipped_manifests,
        blobs_copied=tally.copied,
        blobs_skipped=tally.skipped,
        blobs_mounted=tally.mounted,
        bytes_copied=tally.bytes,
    )


def _has_manifest(store: ContentStore, repository: str, digest: Digest) -> bool:
    try:
        return store.resolve(repository, digest).digest == digest
    except NotFoundError:
        return False


def _points_at(store: ContentStore, repository: str, tag: str, digest: Digest) -> bool:
    try:
        return store.resolve(repository, tag).digest == digest
    except NotFoundError:
        return False


@dataclass(frozen=True)
class _Copier:
    src: ContentStore
    src_repo: str
    dst: ContentStore
    dst_repo: str
    report: Progress
    tmpdir: Path | None

    def collect(self, fetched: FetchedManifest, plan: _Plan, depth: int) -> None:
        """Add ``fetched``'s subtree to ``plan`` in post-order, skipping what ``dst`` has."""
        if any(m.digest == fetched.digest for m in plan.manifests):
            return
        if _has_manifest(self.dst, self.dst_repo, fetched.digest):
            plan.skipped_manifests += 1
            return
        parsed = fetched.parse()
        if isinstance(parsed, Index):
            if depth >= MAX_INDEX_DEPTH:
                raise IntegrityError(
                    f"index {fetched.digest} nests indexes more than {MAX_INDEX_DEPTH} deep",
                    hint="refusing to follow it; this is not a real image index",
                )
            for child in parsed.manifests:
                child_fetched = self.src.get_manifest(self.src_repo, child.digest)
                if len(child_fetched.data) != child.size:
                    raise IntegrityError(
                        f"manifest {self.src_repo}@{child.digest} is "
                        f"{len(child_fetched.data)} bytes, index {fetched.digest} says "
                        f"{child.size}",
                        hint="the source index is inconsistent",
                    )
                self.collect(child_fetched, plan, depth + 1)
        else:
            assert isinstance(parsed, Manifest)
            for blob in parsed.blobs():
                if blob.urls and any(m in blob.media_type for m in _FOREIGN_MARKERS):
                    continue  # non-distributable: lives at its urls, not in stores
                plan.blobs.setdefault(blob.digest, blob)
        plan.manifests.append(fetched)

    def transfer_all(self, blobs: list[Descriptor], concurrency: int) -> _Tally:
        """Transfer ``blobs``, at most ``concurrency`` at a time; the first failure
        cancels what has not started and is raised once the running ones end."""
        tally = _Tally()
        if not blobs:
            return tally
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=min(concurrency, len(blobs)), thread_name_prefix="ocicore-copy"
        ) as pool:
            futures = [pool.submit(self.transfer, blob) for blob in blobs]
            done, _ = concurrent.futures.wait(
                futures, return_when=concurrent.futures.FIRST_EXCEPTION
            )
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            if failed is not None:
                for future in futures:
                    future.cancel()
                exc = failed.exception()
                assert exc is not None
                raise exc
        for future, blob in zip(futures, blobs, strict=True):
            tally.add(future.result(), blob.size)
        return tally

    def transfer(self, blob: Descriptor) -> str:
        """Make one blob present at the destination; returns the push outcome."""
        key = f"copy:{blob.digest}"
        self.report.start(key, f"copy {blob.digest.hex[:12]}", blob.size)
        try:
            outcome = self._transfer(blob)
        except BaseException:
            self.report.finish(key, "failed")
            raise
        self.report.advance(key, blob.size)
        self.report.finish(key, "done" if outcome == "uploaded" else outcome)
        return outcome

    def _transfer(self, blob: Descriptor) -> str:
        src, dst, digest = self.src, self.dst, blob.digest
        if dst.blob_exists(self.dst_repo, digest):
            return "skipped"
        if isinstance(src, OCILayout):
            return dst.push_blob(self.dst_repo, src.present_blob(blob), digest)
        if isinstance(dst, OCILayout):
            target = dst.blob_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            src.fetch_blob(self.src_repo, blob, target)
            return "uploaded"
        same_registry = src is dst and self.src_repo != self.dst_repo
        if same_registry and isinstance(dst, RegistryClient) and dst.mount_blob(
            self.dst_repo, digest, self.src_repo
        ):
            return "mounted"
        with tempfile.TemporaryDirectory(prefix="ocicore-copy-", dir=self.tmpdir) as tmp:
            path = Path(tmp) / "blob"
            src.fetch_blob(self.src_repo, blob, path)
            return dst.push_blob(self.dst_repo, path, digest)
