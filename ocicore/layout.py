"""``OCILayout``: an OCI image layout directory (and its tar form) as a ``ContentStore``.

The layout is the image spec's: an ``oci-layout`` file (``{"imageLayoutVersion":
"1.0.0"}``), ``index.json`` (an OCI index of the entry points) and the content under
``blobs/<algorithm>/<hex>``. It reads what ``skopeo copy … oci:<dir>:<tag>`` writes, and
skopeo reads what it writes (``oci:<dir>:<tag>`` and, via ``write_tar``,
``oci-archive:<tar>:<tag>``).

Tags and repositories. A layout has no repositories of its own; the rule is:

- Blobs and manifests are shared by the whole layout: the ``repository`` argument of
  blob and by-digest operations is validated and otherwise ignored.
- A tag is an ``index.json`` entry whose ``org.opencontainers.image.ref.name``
  annotation is the bare tag (``1.0.3``), as skopeo writes and reads it. We also record
  the repository in ``io.alga.appliance-release.repository``, so one layout can carry
  the same tag for several repositories. An entry matches repository ``R`` and tag ``T``
  when its ref name is ``T`` and its repository annotation is ``R`` or absent (entries
  written by other tools apply to every repository); an exact repository match wins.
  A ref name that is a full reference (``registry/repo:tag``, as some tools write it) is
  read as that repository and tag.
- Pushing a manifest with a tag replaces the entry of that tag for that repository
  (and an unscoped entry of the same tag), as a registry moves a tag. skopeo, which
  knows only the ref name, sees the first entry with the tag; keep one repository per
  layout when skopeo must read it unambiguously.
- A manifest pushed without a tag is stored as a blob only, resolvable by digest (like
  an untagged manifest in a registry); ``index.json`` lists tagged entry points (and
  whatever other tools put there).

Writes are atomic: blobs stream into a temporary file in their final directory while
hashing, are flushed to disk and ``os.replace``d into place only when the digest
matches; ``index.json`` is rewritten the same way under a lock (a thread lock plus an
``flock`` on the layout directory, so concurrent processes do not lose tags). Reads
verify: a malformed ``oci-layout`` or ``index.json`` raises ``LayoutError``, a missing
blob ``LayoutNotFoundError`` and a blob that does not hash to its name
``DigestMismatchError``, each with a one-line message naming the layout.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from pydantic import ValidationError

from ocicore.client import FetchedManifest
from ocicore.config import ClientConfig
from ocicore.digest import Digest
from ocicore.errors import (
    DigestMismatchError,
    InvalidDigestError,
    InvalidInputError,
    InvalidReferenceError,
    LayoutError,
    NotFoundError,
    SizeLimitError,
)
from ocicore.fsutil import write_atomic
from ocicore.jsonutil import canonical_json, load_json_strict
from ocicore.models import OCI_INDEX, Descriptor, Index, Manifest, media_type_of, parse_manifest
from ocicore.progress import NoProgress, Progress
from ocicore.reference import Reference, check_repository, check_tag

__all__ = [
    "LAYOUT_VERSION",
    "REF_NAME_ANNOTATION",
    "REPOSITORY_ANNOTATION",
    "LayoutNotFoundError",
    "OCILayout",
]

LAYOUT_VERSION = "1.0.0"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
REPOSITORY_ANNOTATION = "io.alga.appliance-release.repository"

_INDEX_FILE = "index.json"
_LAYOUT_FILE = "oci-layout"
_BLOBS = "blobs"
#: ``index.json`` lists entry points only; this bounds what we parse.
_MAX_INDEX_BYTES = 16 * 1024 * 1024
_MAX_TAR_ENTRIES = 100_000
_READ_CHUNK = 1024 * 1024
_FOREIGN_MARKERS = ("nondistributable", "foreign")


class LayoutNotFoundError(LayoutError, NotFoundError):
    """A tag, manifest or blob is not in the layout.

    Both a ``LayoutError`` and a ``NotFoundError``: callers that probe a store for
    content (``except NotFoundError``) treat a layout as they treat a registry.
    """


@dataclass(frozen=True)
class _Entry:
    descriptor: Descriptor
    tag: str | None
    repository: str | None


class OCILayout:
    """Read and write an OCI image layout directory at ``path``.

    With ``create=True`` a missing or empty directory is initialised (an existing
    layout is opened as is); otherwise ``path`` must already be a layout. Raises
    ``LayoutError`` when it is not one, or not a valid one.
    """

    def __init__(
        self,
        path: Path,
        *,
        create: bool = False,
        config: ClientConfig | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.path = Path(path)
        self.config = config or ClientConfig()
        self.progress: Progress = progress or NoProgress()
        self._lock = threading.Lock()
        if create and not (self.path / _LAYOUT_FILE).exists():
            self._initialise()
        self._check_layout_file()
        self._read_index()

    def __repr__(self) -> str:
        return f"OCILayout({str(self.path)!r})"

    # -- tar form ----------------------------------------------------------------

    @classmethod
    def from_tar(
        cls,
        archive: Path,
        workdir: Path,
        *,
        max_bytes: int | None = None,
        max_entries: int = _MAX_TAR_ENTRIES,
        config: ClientConfig | None = None,
    ) -> OCILayout:
        """Extract an untrusted layout tar (``oci-archive``) into ``workdir`` and open it.

        ``workdir`` must be missing or empty. Only regular files and directories with
        relative names inside the tree are accepted: absolute names, ``..``, links,
        devices, duplicates and archives over ``max_bytes`` (default: the blob size
        cap) or ``max_entries`` raise ``LayoutError`` before anything escapes
        ``workdir``. Gzip-compressed tars are accepted too.
        """
        config = config or ClientConfig()
        workdir = Path(workdir)
        if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
            raise LayoutError(
                f"cannot extract {archive} into {workdir}: it is not empty",
                hint="pass an empty or missing directory",
            )
        workdir.mkdir(parents=True, exist_ok=True)
        _extract_layout_tar(
            archive, workdir, config.max_blob_bytes if max_bytes is None else max_bytes, max_entries
        )
        return cls(workdir, config=config)

    def write_tar(self, dest: Path) -> None:
        """Write the layout as an uncompressed, deterministic tar (what ``skopeo copy
        … oci-archive:`` reads): entries sorted by name, mtime 0, uid/gid 0, no owner
        names, modes 0644/0755. Written to a temporary file and moved into place.

        Raises ``LayoutError`` when the layout is not valid.
        """
        self._check_layout_file()
        self._read_index()
        members = self._tar_members()
        dest = Path(dest)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.partial-")
        tmp = Path(tmp_name)
        try:
            with (
                os.fdopen(fd, "wb") as raw,
                tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for name, source in members:
                    info = tarfile.TarInfo(name)
                    info.mtime = 0
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if source is None:
                        info.type = tarfile.DIRTYPE
                        info.mode = 0o755
                        tar.addfile(info)
                        continue
                    info.mode = 0o644
                    info.size = source.stat().st_size
                    with source.open("rb") as fh:
                        tar.addfile(info, fh)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    # -- reads -------------------------------------------------------------------

    def resolve(self, repository: str, reference: str | Digest) -> Descriptor:
        """The descriptor (media type, digest, size) of a tag or a manifest digest.

        Raises ``LayoutNotFoundError`` when unknown and ``LayoutError`` when
        ``index.json`` points at a blob that is missing or has another size.
        """
        check_repository(repository)
        if isinstance(reference, Digest):
            entry = self._entry_by_digest(reference)
            if entry is None:
                return self.get_manifest(repository, reference).descriptor()
            descriptor = entry.descriptor
        else:
            descriptor = self._entry_by_tag(repository, reference).descriptor
        self.present_blob(descriptor, listed_by="index.json")
        return Descriptor(
            media_type=descriptor.media_type, digest=descriptor.digest, size=descriptor.size
        )

    def get_manifest(self, repository: str, reference: str | Digest) -> FetchedManifest:
        """A manifest or index by tag or digest, its bytes verified against the digest.

        Raises ``LayoutNotFoundError`` when unknown (or when the digest names a blob
        that is not a manifest), ``SizeLimitError`` over the manifest cap,
        ``DigestMismatchError`` when the file does not hash to its name and
        ``LayoutError`` when ``index.json`` disagrees with the content.
        """
        check_repository(repository)
        entry: _Entry | None
        if isinstance(reference, Digest):
            entry = self._entry_by_digest(reference)
            digest = reference
        else:
            entry = self._entry_by_tag(repository, reference)
            digest = entry.descriptor.digest
        what = f"manifest {digest} in the OCI layout at {self.path}"
        path = self.blob_path(digest)
        if not path.is_file():
            if entry is not None:
                raise LayoutError(
                    f"{what} is listed in index.json but its blob is missing",
                    hint="the layout is incomplete; write it again",
                )
            raise LayoutNotFoundError(f"{what}: not found", hint="check the digest")
        size = path.stat().st_size
        if size > self.config.max_manifest_bytes:
            if entry is None:
                raise LayoutNotFoundError(
                    f"{what}: not found (the blob is too large to be a manifest)",
                    hint="check the digest",
                )
            raise SizeLimitError(
                f"{what} is {size} bytes, over the {self.config.max_manifest_bytes}-byte "
                "limit for manifests",
                hint="refusing to read it",
            )
        data = path.read_bytes()
        actual = Digest.of(data, digest.algorithm)
        if actual != digest:
            raise DigestMismatchError(
                what, str(digest), str(actual), hint="the layout's blob file is corrupted"
            )
        if entry is not None and entry.descriptor.size != len(data):
            raise LayoutError(
                f"{what}: index.json says {entry.descriptor.size} bytes, the blob has {len(data)}",
                hint="the layout's index.json is wrong",
            )
        try:
            parse_manifest(data, what=what)
            media_type = (
                entry.descriptor.media_type if entry is not None else media_type_of(data, None)
            )
        except InvalidInputError as exc:
            if entry is None:
                raise LayoutNotFoundError(
                    f"{what}: not found (that blob is not a manifest)", hint="check the digest"
                ) from None
            raise LayoutError(
                f"{what}: {exc.message}",
                hint="index.json points at something that is not a manifest",
            ) from None
        return FetchedManifest(digest, media_type, data)

    def manifest_exists(self, repository: str, digest: Digest) -> bool:
        """Whether a manifest with ``digest`` is in the layout."""
        try:
            self.resolve(repository, digest)
        except LayoutNotFoundError:
            return False
        return True

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        """Whether the layout holds the blob (``repository`` is ignored)."""
        check_repository(repository)
        return self.blob_path(digest).is_file()

    def blob_path(self, digest: Digest) -> Path:
        """Where the blob ``digest`` lives (whether or not it is there)."""
        return self.path / _BLOBS / digest.algorithm / digest.hex

    def fetch_blob(self, repository: str, descriptor: Descriptor, dest: Path) -> None:
        """Copy a blob to ``dest``, moved there only once digest and size match.

        Raises ``LayoutNotFoundError`` when the blob is missing, ``SizeLimitError`` when
        it is larger than its descriptor and ``DigestMismatchError`` when corrupted.
        """
        check_repository(repository)
        digest = descriptor.digest
        what = f"blob {digest} in the OCI layout at {self.path}"
        source = self.blob_path(digest)
        if not source.is_file():
            raise LayoutNotFoundError(
                f"{what} is missing", hint="the layout is incomplete; copy it again"
            )
        key = str(digest)
        self.progress.start(key, f"read {digest.hex[:12]}", descriptor.size)
        dest = Path(dest)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.partial-")
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.new(digest.algorithm)
            size = 0
            with os.fdopen(fd, "wb") as out, source.open("rb") as fh:
                while chunk := fh.read(self.config.chunk_size):
                    size += len(chunk)
                    if size > descriptor.size:
                        raise SizeLimitError(
                            f"{what} is larger than the {descriptor.size} bytes its "
                            "descriptor says",
                            hint="the layout's blob file is corrupted",
                        )
                    hasher.update(chunk)
                    out.write(chunk)
                    self.progress.advance(key, len(chunk))
            actual = Digest(digest.algorithm, hasher.hexdigest())
            if actual != digest or size != descriptor.size:
                raise DigestMismatchError(
                    what, str(digest), str(actual), hint="the layout's blob file is corrupted"
                )
            os.replace(tmp, dest)
        except BaseException:
            self.progress.finish(key, "failed")
            raise
        finally:
            tmp.unlink(missing_ok=True)
        self.progress.finish(key, "done")

    def list_tags(self, repository: str, *, missing_ok: bool = False) -> list[str]:
        """The tags of ``repository`` (per the rule in the module docstring), sorted.

        Raises ``LayoutNotFoundError`` when there are none, unless ``missing_ok``.
        """
        check_repository(repository)
        tags = sorted(
            {
                e.tag
                for e in self._entries()
                if e.tag is not None and e.repository in (None, repository)
            }
        )
        if not tags and not missing_ok:
            raise LayoutNotFoundError(
                f"repository {repository} has no tags in the OCI layout at {self.path}",
                hint="check the repository name",
            )
        return tags

    # -- writes ------------------------------------------------------------------

    def push_blob(
        self,
        repository: str,
        source: bytes | Path,
        digest: Digest | None = None,
        *,
        mount_from: Sequence[str] = (),
    ) -> str:
        """Store a blob; ``"skipped"`` when present, else ``"uploaded"``.

        ``mount_from`` is accepted for interface compatibility (a layout has one pool
        of blobs). Raises ``DigestMismatchError`` when ``source`` does not hash to
        ``digest`` (nothing is stored then).
        """
        check_repository(repository)
        size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
        if digest is None:
            digest = _digest_of(source, self.config.chunk_size)
        key = str(digest)
        final = self.blob_path(digest)
        if final.is_file() and final.stat().st_size == size:
            self.progress.finish(key, "skipped")
            return "skipped"
        what = f"blob {digest} for the OCI layout at {self.path}"
        if size > self.config.max_blob_bytes:
            raise SizeLimitError(
                f"{what} is {size} bytes, over the {self.config.max_blob_bytes}-byte blob limit",
                hint="raise ClientConfig.max_blob_bytes if this is intended",
            )
        final.parent.mkdir(parents=True, exist_ok=True)
        self.progress.start(key, f"write {digest.hex[:12]}", size)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{digest.hex}.partial-")
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.new(digest.algorithm)
            with os.fdopen(fd, "wb") as out:
                for chunk in _chunks(source, self.config.chunk_size):
                    hasher.update(chunk)
                    out.write(chunk)
                    self.progress.advance(key, len(chunk))
                out.flush()
                os.fsync(out.fileno())
            actual = Digest(digest.algorithm, hasher.hexdigest())
            if actual != digest:
                raise DigestMismatchError(
                    what,
                    str(digest),
                    str(actual),
                    hint="the content given does not match its digest",
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        except BaseException:
            self.progress.finish(key, "failed")
            raise
        finally:
            tmp.unlink(missing_ok=True)
        self.progress.finish(key, "done")
        return "uploaded"

    def push_manifest(
        self, repository: str, data: bytes, media_type: str, *, tag: str | None = None
    ) -> Digest:
        """Store exactly ``data`` as a manifest blob and, with ``tag``, point the tag at it
        in ``index.json`` (replacing the tag's previous entry). Returns the digest.

        Raises ``SizeLimitError`` over the manifest cap, ``ManifestFormatError`` when
        ``data`` is not a manifest or index, and ``LayoutError`` when it references
        a blob or child manifest that is not in the layout (push those first).
        """
        check_repository(repository)
        if tag is not None:
            check_tag(tag)
        digest = Digest.of(data)
        what = f"manifest {digest} for the OCI layout at {self.path}"
        if len(data) > self.config.max_manifest_bytes:
            raise SizeLimitError(
                f"{what} is {len(data)} bytes, over the {self.config.max_manifest_bytes}-byte "
                "limit",
                hint="registries refuse manifests this large",
            )
        parsed = parse_manifest(data, what=what)
        referenced = parsed.blobs() if isinstance(parsed, Manifest) else parsed.manifests
        for child in referenced:
            if _is_foreign(child):
                continue
            if not self.blob_path(child.digest).is_file():
                raise LayoutError(
                    f"refusing to store {what}: it references {child.digest} "
                    f"({child.media_type}), which is not in the layout",
                    hint="push the blobs and child manifests before the manifest",
                )
        self.push_blob(repository, data, digest)
        if tag is not None:
            entry = Descriptor(
                media_type=media_type,
                digest=digest,
                size=len(data),
                annotations={REF_NAME_ANNOTATION: tag, REPOSITORY_ANNOTATION: repository},
            )
            with self._index_lock():
                index = self._read_index()
                kept = [d for d in index.manifests if not _same_tag(d, repository, tag)]
                self._write_index(index, [*kept, entry])
        return digest

    def tag_manifest(self, repository: str, digest: Digest, tag: str) -> None:
        """Point ``tag`` at a manifest already in the layout."""
        fetched = self.get_manifest(repository, digest)
        self.push_manifest(repository, fetched.data, fetched.media_type, tag=tag)

    # -- internals ---------------------------------------------------------------

    def _initialise(self) -> None:
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise LayoutError(
                f"{self.path} is not an OCI layout and is not empty",
                hint="pass a new or empty directory to create a layout",
            )
        (self.path / _BLOBS / "sha256").mkdir(parents=True, exist_ok=True)
        write_atomic(
            self.path / _INDEX_FILE,
            canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
        )
        write_atomic(
            self.path / _LAYOUT_FILE, canonical_json({"imageLayoutVersion": LAYOUT_VERSION})
        )

    def _check_layout_file(self) -> None:
        where = f"the OCI layout at {self.path}"
        path = self.path / _LAYOUT_FILE
        if not path.is_file():
            raise LayoutError(
                f"{self.path} is not an OCI image layout (no oci-layout file)",
                hint="pass a directory written by 'skopeo copy … oci:DIR' or by this tool",
            )
        try:
            doc = load_json_strict(
                path.read_bytes(), what=f"oci-layout of {where}", max_bytes=64 * 1024
            )
        except InvalidInputError as exc:
            raise LayoutError(exc.message, hint="the layout is damaged") from None
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise LayoutError(
                f"oci-layout of {where} has imageLayoutVersion {version!r}, "
                f"expected {LAYOUT_VERSION!r}",
                hint="only version 1 layouts are supported",
            )

    def _read_index(self) -> Index:
        what = f"index.json of the OCI layout at {self.path}"
        path = self.path / _INDEX_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise LayoutError(f"{what} is missing", hint="the layout is damaged") from None
        try:
            doc: Any = load_json_strict(data, what=what, max_bytes=_MAX_INDEX_BYTES)
        except InvalidInputError as exc:
            raise LayoutError(exc.message, hint="the layout is damaged") from None
        if not isinstance(doc, dict):
            raise LayoutError(f"{what} is not a JSON object", hint="the layout is damaged")
        media_type = doc.get("mediaType")
        if media_type not in (None, OCI_INDEX):
            raise LayoutError(
                f"{what} has mediaType {media_type!r}, expected {OCI_INDEX}",
                hint="the layout is damaged",
            )
        try:
            return Index.model_validate(doc)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(document)"
            raise LayoutError(
                f"{what} is not a valid OCI index: {loc}: {err['msg']}",
                hint="the layout is damaged",
            ) from None

    def _write_index(self, index: Index, manifests: list[Descriptor]) -> None:
        doc = index.model_dump(mode="json", by_alias=True, exclude_none=True)
        doc["schemaVersion"] = 2
        doc["mediaType"] = OCI_INDEX
        doc["manifests"] = [
            d.model_dump(mode="json", by_alias=True, exclude_none=True) for d in manifests
        ]
        write_atomic(self.path / _INDEX_FILE, canonical_json(doc))

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        with self._lock:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _entries(self) -> list[_Entry]:
        entries = []
        for descriptor in self._read_index().manifests:
            annotations = descriptor.annotations or {}
            tag, repository = _tag_of(annotations.get(REF_NAME_ANNOTATION))
            repository = annotations.get(REPOSITORY_ANNOTATION, repository)
            entries.append(_Entry(descriptor, tag, repository))
        return entries

    def _entry_by_tag(self, repository: str, tag: str) -> _Entry:
        check_tag(tag)
        candidates = [
            e for e in self._entries() if e.tag == tag and e.repository in (None, repository)
        ]
        exact = [e for e in candidates if e.repository == repository]
        if exact or candidates:
            return (exact or candidates)[0]
        raise LayoutNotFoundError(
            f"manifest {repository}:{tag}: no such tag in the OCI layout at {self.path}",
            hint="list the layout's tags, or check the repository and tag",
        )

    def _entry_by_digest(self, digest: Digest) -> _Entry | None:
        return next((e for e in self._entries() if e.descriptor.digest == digest), None)

    def present_blob(self, descriptor: Descriptor, *, listed_by: str = "") -> Path:
        """The file of ``descriptor``'s blob, checked to exist with the descriptor's size
        (not hashed: readers that stream it hash it). ``listed_by`` names what referred
        to it, for the message. Raises ``LayoutNotFoundError`` when it is missing and
        ``LayoutError`` when its size differs."""
        path = self.blob_path(descriptor.digest)
        where = f"the OCI layout at {self.path}"
        blob = f"{listed_by} of {where} lists {descriptor.digest}, but its blob" if listed_by \
            else f"blob {descriptor.digest} in {where}"
        if not path.is_file():
            raise LayoutNotFoundError(f"{blob} is missing",
                                      hint="the layout is incomplete; write it again")
        if path.stat().st_size != descriptor.size:
            raise LayoutError(
                f"{blob} has {path.stat().st_size} bytes, the descriptor says "
                f"{descriptor.size}", hint="the layout's blob file is damaged")
        return path

    def _tar_members(self) -> list[tuple[str, Path | None]]:
        """``(name, file or None for a directory)`` of everything that belongs in a tar."""
        members: list[tuple[str, Path | None]] = [
            (_LAYOUT_FILE, self.path / _LAYOUT_FILE),
            (_INDEX_FILE, self.path / _INDEX_FILE),
            (f"{_BLOBS}/", None),
        ]
        blobs = self.path / _BLOBS
        for algorithm_dir in sorted(blobs.iterdir()) if blobs.is_dir() else []:
            if not algorithm_dir.is_dir() or algorithm_dir.is_symlink():
                continue
            members.append((f"{_BLOBS}/{algorithm_dir.name}/", None))
            for blob in sorted(algorithm_dir.iterdir()):
                try:
                    Digest(algorithm_dir.name, blob.name)
                except InvalidDigestError:
                    continue  # temporary files of writes in progress, stray files
                if blob.is_file() and not blob.is_symlink():
                    members.append((f"{_BLOBS}/{algorithm_dir.name}/{blob.name}", blob))
        return sorted(members, key=lambda m: m[0])


def _tag_of(ref_name: str | None) -> tuple[str | None, str | None]:
    """``(tag, repository)`` of a ref-name annotation: a bare tag, or a full reference."""
    if not ref_name:
        return None, None
    try:
        check_tag(ref_name)
        return ref_name, None
    except InvalidReferenceError:
        pass
    try:
        parsed = Reference.parse(ref_name, default_tag=None)
    except InvalidReferenceError:
        return None, None
    return parsed.tag, parsed.repository if parsed.tag else None


def _same_tag(descriptor: Descriptor, repository: str, tag: str) -> bool:
    annotations = descriptor.annotations or {}
    entry_tag, entry_repo = _tag_of(annotations.get(REF_NAME_ANNOTATION))
    entry_repo = annotations.get(REPOSITORY_ANNOTATION, entry_repo)
    return entry_tag == tag and entry_repo in (None, repository)


def _is_foreign(descriptor: Descriptor) -> bool:
    """Non-distributable layers live at their ``urls``, not in registries or layouts."""
    return bool(descriptor.urls) and any(m in descriptor.media_type for m in _FOREIGN_MARKERS)


def _chunks(source: bytes | Path, size: int) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for start in range(0, len(source), size):
            yield source[start : start + size]
        return
    with Path(source).open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def _digest_of(source: bytes | Path, chunk_size: int) -> Digest:
    hasher = hashlib.sha256()
    for chunk in _chunks(source, chunk_size):
        hasher.update(chunk)
    return Digest("sha256", hasher.hexdigest())


def _member_name(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    raw = member.name
    bad = f"refusing {archive}: member {raw[:200]!r}"
    if not raw or "\\" in raw or "\x00" in raw:
        raise LayoutError(
            f"{bad} has an unusable name", hint="the archive is not a plain OCI layout tar"
        )
    if raw.startswith("/"):
        raise LayoutError(f"{bad} is an absolute path", hint="the archive is unsafe")
    parts = [p for p in PurePosixPath(raw).parts if p != "."]
    if any(p == ".." for p in parts):
        raise LayoutError(
            f"{bad} leaves the extraction directory ('..')", hint="the archive is unsafe"
        )
    if not parts:
        return PurePosixPath(".")
    return PurePosixPath(*parts)


def _extract_layout_tar(archive: Path, dest: Path, max_bytes: int, max_entries: int) -> None:
    """Extract only regular files and directories, by our own writes (never
    ``TarFile.extract``), so nothing in the archive can name a path outside ``dest``."""
    if not archive.is_file():
        raise LayoutError(f"{archive} does not exist or is not a file", hint="check the path")
    total = 0
    seen: set[PurePosixPath] = set()
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > max_entries:
                    raise LayoutError(
                        f"refusing {archive}: more than {max_entries} entries",
                        hint="the archive is not a plain OCI layout tar",
                    )
                name = _member_name(member, archive)
                if not (member.isdir() or member.isreg()):
                    kind = "a link" if member.issym() or member.islnk() else "a device or fifo"
                    raise LayoutError(
                        f"refusing {archive}: member {member.name[:200]!r} is {kind}",
                        hint="an OCI layout tar holds only regular files and directories",
                    )
                if name == PurePosixPath("."):
                    continue
                if name in seen:
                    raise LayoutError(
                        f"refusing {archive}: member {str(name)!r} appears twice",
                        hint="the archive is ambiguous",
                    )
                seen.add(name)
                target = dest.joinpath(*name.parts)
                if member.isdir():
                    target.mkdir(mode=0o755, parents=True, exist_ok=True)
                    continue
                total += member.size
                if total > max_bytes:
                    raise LayoutError(
                        f"refusing {archive}: over {max_bytes} bytes of content",
                        hint="raise the limit if this archive is expected",
                    )
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - regular members always have data
                    continue
                _copy_new_file(source, target, member.size)
    except tarfile.TarError as exc:
        raise LayoutError(
            f"{archive} is not a readable tar archive ({exc})",
            hint="pass an OCI layout tar, e.g. from 'skopeo copy … oci-archive:FILE'",
        ) from None
    except OSError as exc:
        raise LayoutError(
            f"cannot extract {archive} into {dest}: {exc}",
            hint="the archive's entries conflict, or the directory is not writable",
        ) from None


def _copy_new_file(source: IO[bytes], target: Path, size: int) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_READ_CHUNK):
            written += len(chunk)
            out.write(chunk)
    if written != size:
        raise LayoutError(f"tar member {target.name} is truncated", hint="the archive is damaged")
