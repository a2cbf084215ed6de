"""Safe extraction of untrusted tar(+gzip) archives: charts, config bundles, layers.

``safe_extract(archive, dest)`` reads the archive as a stream and checks every member
before anything of it is written:

- names: no absolute path, no ``..`` component, no NUL or backslash; ``./`` prefixes
  and trailing ``/`` are tolerated; the same file or link may not appear twice, and
  nothing may sit under a file or a link;
- types: regular files and directories; symbolic links only with
  ``ExtractLimits(allow_symlinks=True)``, and then only relative, resolving inside
  ``dest`` and not through another link of the archive (links are created last, so
  nothing is ever written through one). Hard links, devices, fifos, sparse files and
  unknown types are refused;
- limits (``ExtractLimits``): the number of entries, each file's size (from its header
  before reading, and again while its bytes stream), the total of file sizes, the
  compression ratio (uncompressed bytes produced / compressed bytes consumed, checked
  continuously once 1 MiB has been produced, so a bomb stops within a few MiB) and the
  size of extended (pax/GNU) headers (1 MiB each).

Everything is written into a fresh temporary directory next to ``dest`` and renamed to
``dest`` only when the whole archive has passed; on any failure the temporary directory
is removed, so ``dest`` is never half-written and nothing appears outside it. ``dest``
must not exist or must be an empty directory. Files get mode 0755 when the archive
gives any execute bit and 0644 otherwise, directories 0755 (never setuid, setgid or
sticky), owner the current user, mtime the time of extraction.

Input: a plain tar or a gzip-compressed tar (one or more gzip members); other
compressions are refused with a clear message.

Errors (all ``InvalidInputError``, exit 2): ``UnsafeArchiveError`` (a rule or a limit;
``member`` names the entry, when there is one), ``MalformedArchiveError`` (not a
readable tar/gzip, truncated), ``ExtractDestinationError`` (``dest`` unusable).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ocicore.errors import InvalidInputError
from ocicore.tarpack import symlink_target_problem

MiB = 1 << 20
RATIO_GRACE_BYTES = 1 * MiB
"""Uncompressed bytes produced before the ratio is enforced: tiny archives (headers and
zero padding) legitimately compress far better than 200:1."""
MAX_EXTENDED_HEADER_BYTES = 1 * MiB
_CHUNK = 64 * 1024
_SLACK = 4 * tarfile.RECORDSIZE  # tarfile's stream reads ahead by up to one record

_UNSAFE_HINT = "the archive is unsafe to extract; do not use it, and tell whoever published it"


class ArchiveError(InvalidInputError):
    """An archive cannot be extracted."""

    def __init__(self, message: str, *, hint: str = "", member: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.member = member


class UnsafeArchiveError(ArchiveError):
    """The archive breaks a safety rule or a limit; ``member`` names the entry."""


class MalformedArchiveError(ArchiveError):
    """The archive is not a readable tar or gzip stream (corrupt or truncated)."""


class ExtractDestinationError(InvalidInputError):
    """The extraction directory exists and is not empty, or cannot be written."""


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """The caps ``safe_extract`` enforces. Defaults suit charts and config bundles."""

    max_entries: int = 10_000
    max_total_bytes: int = 512 * MiB
    max_file_bytes: int = 256 * MiB
    max_ratio: float = 200.0
    allow_symlinks: bool = False

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_total_bytes", "max_file_bytes", "max_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidInputError(
                    f"ExtractLimits.{name} must be a positive number, not {value!r}",
                    hint="pass a positive limit",
                )


DEFAULT_LIMITS = ExtractLimits()


def safe_extract(
    archive: Path | BinaryIO, dest: Path, *, limits: ExtractLimits = DEFAULT_LIMITS
) -> list[str]:
    """Extract the tar or tar+gzip ``archive`` (a path or a binary stream) into ``dest``.

    Returns the archive paths written (normalised, in archive order; implicit parent
    directories are not listed). Raises ``UnsafeArchiveError`` naming the member and
    the rule it breaks, ``MalformedArchiveError`` for an unreadable or truncated
    archive, ``ExtractDestinationError`` when ``dest`` exists and is not an empty
    directory; in every case nothing is left in or next to ``dest``.
    """
    dest = Path(dest)
    _check_destination(dest)
    if not isinstance(archive, Path | str):
        return _extract_atomically(archive, dest, limits, "")
    try:
        source = open(archive, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ArchiveError(
            f"cannot read the archive {archive}: {exc.strerror}", hint="check the path"
        ) from None
    with source:
        return _extract_atomically(source, dest, limits, f"{archive}: ")


def safe_extract_bytes(
    data: bytes, dest: Path, *, limits: ExtractLimits = DEFAULT_LIMITS
) -> list[str]:
    """``safe_extract`` of an archive held in memory. Raises as ``safe_extract``."""
    return safe_extract(io.BytesIO(data), dest, limits=limits)


# -- destination ---------------------------------------------------------------------


def _check_destination(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ExtractDestinationError(
            f"cannot extract into {dest}: it exists and is not a directory",
            hint="pass a path that does not exist yet, or an empty directory",
        )
    if dest.is_dir() and any(dest.iterdir()):
        raise ExtractDestinationError(
            f"cannot extract into {dest}: it is not empty",
            hint="remove it first, or pass a new directory",
        )


def _extract_atomically(
    source: BinaryIO, dest: Path, limits: ExtractLimits, where: str
) -> list[str]:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    except OSError as exc:
        raise ExtractDestinationError(
            f"cannot create a directory next to {dest}: {exc.strerror}",
            hint="check that its parent is writable",
        ) from None
    try:
        names = _Extraction(source, staging, limits, where).run()
        os.chmod(staging, 0o755)  # noqa: S103 - what mkdir would give, not mkdtemp's 0700
        os.replace(staging, dest)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExtractDestinationError(
            f"{where}cannot extract into {dest}: {exc.strerror or exc}",
            hint="check that the directory is writable and nothing else writes to it",
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return names


# -- the decompressing, accounting reader ----------------------------------------------


class _MeteredStream:
    """The uncompressed tar stream, decompressed here (not by tarfile) so that the
    compression ratio is measured exactly and bounded output is produced per read."""

    def __init__(self, source: BinaryIO, limits: ExtractLimits, where: str) -> None:
        self._source = source
        self._limits = limits
        self._where = where
        self.produced = 0  # uncompressed bytes handed to tarfile
        self._raw_read = 0  # compressed bytes read from the source
        self.ceiling = MAX_EXTENDED_HEADER_BYTES + _SLACK
        self.context = "the first archive member"
        first = b""
        while len(first) < 6 and (more := source.read(_CHUNK)):
            first += more  # a slow stream may hand over fewer bytes than the magic
        self._raw_read = len(first)
        self._pending = first
        self._gzip = first[:2] == b"\x1f\x8b"
        self._inflater = zlib.decompressobj(wbits=31) if self._gzip else None
        for magic, name in ((b"BZh", "bzip2"), (b"\xfd7zXZ", "xz"), (b"\x28\xb5\x2f\xfd", "zstd")):
            if first.startswith(magic):
                raise MalformedArchiveError(
                    f"{where}the archive is compressed with {name}",
                    hint="only plain tar and tar+gzip archives are supported",
                )

    def read(self, size: int = -1, /) -> bytes:
        if size == 0:
            return b""  # and never decompress(…, 0), which means "no output limit"
        if size < 0:
            size = _CHUNK
        data = self._read_gzip(size) if self._gzip else self._read_plain(size)
        self.produced += len(data)
        self._check()
        return data

    def _read_plain(self, size: int) -> bytes:
        if not self._pending:
            self._pending = self._read_raw()
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def _read_raw(self) -> bytes:
        data = self._source.read(_CHUNK)
        self._raw_read += len(data)
        return data

    def _read_gzip(self, size: int) -> bytes:
        assert self._inflater is not None
        while True:
            if self._inflater.eof:
                # The next gzip member (RFC 1952 allows several), or the clean end.
                if not self._pending:
                    self._pending = self._read_raw()
                    if not self._pending:
                        return b""
                self._inflater = zlib.decompressobj(wbits=31)
            if not self._pending:
                self._pending = self._read_raw()
                if not self._pending:
                    raise MalformedArchiveError(
                        f"{self._where}the gzip stream ends early (truncated archive)",
                        hint="download the archive again",
                    )
            try:
                data = self._inflater.decompress(self._pending, size)
            except zlib.error as exc:
                raise MalformedArchiveError(
                    f"{self._where}the gzip stream is corrupt ({exc})",
                    hint="download the archive again",
                ) from None
            if self._inflater.eof:
                self._pending = self._inflater.unused_data
            else:
                self._pending = self._inflater.unconsumed_tail
            if data:
                return data

    def _check(self) -> None:
        if self._gzip and self.produced > RATIO_GRACE_BYTES:
            consumed = max(1, self._raw_read - len(self._pending))
            if self.produced > self._limits.max_ratio * consumed:
                raise UnsafeArchiveError(
                    f"{self._where}{self.context}: the archive expands more than "
                    f"{self._limits.max_ratio:g} times its compressed size "
                    "(a compression bomb)",
                    hint=f"{_UNSAFE_HINT}; if it is expected, raise ExtractLimits.max_ratio",
                )
        if self.produced > self.ceiling:
            raise UnsafeArchiveError(
                f"{self._where}{self.context}: a tar header is larger than "
                f"{MAX_EXTENDED_HEADER_BYTES} bytes",
                hint=_UNSAFE_HINT,
            )

    # tarfile's file-object protocol; a read-only stream supports none of these.
    def write(self, data: bytes, /) -> int:
        raise io.UnsupportedOperation("read-only stream")

    def tell(self) -> int:
        return self.produced

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("not seekable")

    def close(self) -> None:
        pass


# -- validation and writing ------------------------------------------------------------


def _show(name: str) -> str:
    return repr(name[:200] + ("..." if len(name) > 200 else ""))


class _Extraction:
    def __init__(self, source: BinaryIO, root: Path, limits: ExtractLimits, where: str) -> None:
        self._stream = _MeteredStream(source, limits, where)
        self._root = root
        self._limits = limits
        self._where = where
        self._kinds: dict[str, str] = {}  # path -> "dir" | "file" | "symlink"
        self._links: list[tuple[str, str]] = []
        self._names: list[str] = []
        self._listed: set[str] = set()
        self._total = 0

    def _unsafe(self, name: str, rule: str, hint: str = _UNSAFE_HINT) -> UnsafeArchiveError:
        return UnsafeArchiveError(
            f"{self._where}archive member {_show(name)}: {rule}", hint=hint, member=name
        )

    def run(self) -> list[str]:
        try:
            with tarfile.open(fileobj=self._stream, mode="r|") as tar:
                for count, member in enumerate(tar, start=1):
                    if count > self._limits.max_entries:
                        raise UnsafeArchiveError(
                            f"{self._where}the archive has more than "
                            f"{self._limits.max_entries} entries",
                            hint=f"{_UNSAFE_HINT}; if it is expected, raise "
                            "ExtractLimits.max_entries",
                            member=member.name,
                        )
                    # The stream may now run to the end of this member's data, plus the
                    # next member's headers: bounded, so a huge pax header cannot be
                    # read into memory.
                    data = -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                    data_end = member.offset_data + (data if member.isreg() else 0)
                    self._stream.ceiling = data_end + MAX_EXTENDED_HEADER_BYTES + _SLACK
                    self._stream.context = f"archive member {_show(member.name)}"
                    self._member(tar, member)
                    self._stream.context = f"the archive member after {_show(member.name)}"
        except tarfile.TarError as exc:
            raise MalformedArchiveError(
                f"{self._where}not a readable tar archive ({exc})",
                hint="pass a tar or tar+gzip archive; download it again if it is truncated",
            ) from None
        self._create_links()
        return self._names

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        path = self._normalise(name)
        if path is None:  # the archive root, "./"
            if member.isdir():
                return
            raise self._unsafe(name, "names the extraction directory itself")
        if member.islnk():
            raise self._unsafe(
                name, f"is a hard link (to {_show(member.linkname)}); hard links are not allowed"
            )
        if member.ischr() or member.isblk() or member.isfifo():
            kind = "character device" if member.ischr() else "block device"
            kind = "fifo" if member.isfifo() else kind
            raise self._unsafe(name, f"is a {kind}; device files and fifos are not allowed")
        if member.issym():
            self._symlink(name, path, member.linkname)
            return
        if member.isdir():
            self._directory(name, path)
            return
        if not member.isreg() or member.sparse is not None:
            raise self._unsafe(
                name, f"has an unsupported type ({member.type!r}); only files and directories"
            )
        self._file(tar, member, name, path)

    def _normalise(self, name: str) -> str | None:
        if not name or "\x00" in name or "\\" in name:
            raise self._unsafe(name, "has an empty name or one with a NUL or backslash")
        if name.startswith("/"):
            raise self._unsafe(name, "is an absolute path")
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise self._unsafe(name, "path escapes the extraction directory")
        return "/".join(parts) or None

    def _claim(self, name: str, path: str, kind: str) -> None:
        """Record ``path`` as ``kind``, creating its parents; refuse what would overwrite
        an entry or sit under a file or link."""
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            existing = self._kinds.get(parent)
            if existing is None:
                (self._root / parent).mkdir(mode=0o755)
                self._kinds[parent] = "dir"
            elif existing != "dir":
                raise self._unsafe(name, f"lies under {_show(parent)}, which is a {existing}")
        existing = self._kinds.get(path)
        if existing == kind == "dir":
            pass
        elif existing == kind:
            raise self._unsafe(name, "appears more than once in the archive")
        elif existing is not None:
            raise self._unsafe(name, f"is a {kind}, but the archive has a {existing} there too")
        self._kinds[path] = kind
        if path not in self._listed:
            self._listed.add(path)
            self._names.append(path)

    def _directory(self, name: str, path: str) -> None:
        created = path in self._kinds
        self._claim(name, path, "dir")
        if not created:
            (self._root / path).mkdir(mode=0o755)

    def _symlink(self, name: str, path: str, target: str) -> None:
        if not self._limits.allow_symlinks:
            raise self._unsafe(
                name,
                f"is a symbolic link (to {_show(target)}); symbolic links are not allowed",
            )
        self._claim(name, path, "symlink")
        self._links.append((path, target))

    def _create_links(self) -> None:
        # Checked and created last, when every link of the archive is known, so no
        # link is traversed on the way to another and no file is written through one.
        symlinks = {path for path, _ in self._links}
        for path, target in self._links:
            problem = symlink_target_problem(path, target, symlinks)
            if problem:
                raise self._unsafe(path, f"symbolic link {problem}")
        for path, target in self._links:
            os.symlink(target, self._root / path)

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, path: str) -> None:
        limits = self._limits
        if member.size > limits.max_file_bytes:
            raise self._unsafe(
                name,
                f"declares {member.size} bytes, over the per-file limit of "
                f"{limits.max_file_bytes} bytes",
                hint=f"{_UNSAFE_HINT}; if it is expected, raise ExtractLimits.max_file_bytes",
            )
        if self._total + member.size > limits.max_total_bytes:
            raise self._unsafe(
                name,
                f"brings the archive's content over the total limit of "
                f"{limits.max_total_bytes} bytes",
                hint=f"{_UNSAFE_HINT}; if it is expected, raise ExtractLimits.max_total_bytes",
            )
        self._claim(name, path, "file")
        source = tar.extractfile(member)
        assert source is not None  # regular members always have a data stream
        target = self._root / path
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        written = 0
        with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > member.size or written > limits.max_file_bytes:
                    raise self._unsafe(name, "holds more data than its header declares")
                out.write(chunk)
            os.fchmod(out.fileno(), 0o755 if member.mode & 0o111 else 0o644)
        if written != member.size:
            raise MalformedArchiveError(
                f"{self._where}archive member {_show(name)} is truncated "
                f"({written} of {member.size} bytes)",
                hint="download the archive again",
                member=name,
            )
        self._total += written
