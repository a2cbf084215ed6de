"""Deterministic tar+gzip packing: the same input gives the same bytes on any machine.

The rules (DESIGN §2), applied to every archive written here:

- Entries are sorted by path, bytewise on the UTF-8 form; every directory has its own
  entry, and a directory comes before everything under it (a prefix sorts first).
- ``mtime`` is fixed: the ``mtime`` argument, else ``SOURCE_DATE_EPOCH``, else 0.
- uid/gid 0 unless the caller overrides them for a path; uname/gname empty.
- Modes are normalised: directories 0755; files 0755 when any execute bit is set in
  the source, else 0644; symbolic links 0777. Callers may set an explicit mode per path
  (never setuid/setgid).
- Only regular files and directories; symbolic links only when ``allow_symlinks`` is
  passed (or, for in-memory entries, asked for explicitly), and only with a relative
  target that stays inside the tree without passing through another link in it. Hard
  links are never written: every file is stored as a regular file. Devices, fifos and
  sockets are refused.
- Tar format: POSIX.1-2001 (pax). A ustar header suffices for almost every entry; a pax
  extended header (named ``././@PaxHeader``, mtime 0) is added only for what ustar
  cannot hold (paths over 100 bytes, non-ASCII names, sizes ≥ 8 GiB), and carries only
  those keys: never atime, ctime or other host-dependent fields. The archive ends with
  two zero blocks and is padded to a 10240-byte record, as tar(1) does.
- gzip: one member, header mtime 0, no file name (no FNAME flag), OS byte 255, deflate
  at ``COMPRESSLEVEL`` = 6 (zlib's, gzip(1)'s and Go's default). The bytes depend on the
  zlib implementation: stock zlib everywhere we build; a zlib-ng or hardware-deflate
  build may compress differently, so the digests of record come from one build image.

Public API: ``pack_tree`` / ``pack_tree_into`` / ``pack_tree_layer`` for a directory on
disk, ``pack_entries`` / ``pack_entries_into`` / ``pack_entries_layer`` / ``tar_entries``
for in-memory ``FileEntry`` content, ``gzip_bytes``, ``source_date_epoch``, and
``symlink_target_problem`` (the link rule, shared with ``ocicore.extract``). Invalid
input raises ``PackInputError``; a malformed ``SOURCE_DATE_EPOCH`` raises
``InvalidSourceDateEpochError`` (both ``InvalidInputError``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from ocicore.errors import InvalidInputError

COMPRESSLEVEL = 6
"""The deflate level of every gzip stream written here (zlib's default)."""

BLOCK_SIZE = tarfile.BLOCKSIZE  # 512
RECORD_SIZE = tarfile.RECORDSIZE  # 10240
_CHUNK = 1 << 20
# ustar holds an mtime of 11 octal digits; keeping SOURCE_DATE_EPOCH below that keeps
# the time in the plain header (no pax record for it).
_MAX_MTIME = 8**11 - 1

_Kind = Literal["dir", "file", "symlink"]


class PackInputError(InvalidInputError):
    """The tree or the entries given to the packer cannot be packed deterministically."""


class InvalidSourceDateEpochError(InvalidInputError):
    """``SOURCE_DATE_EPOCH`` is set but is not a non-negative integer."""


def source_date_epoch(environ: Mapping[str, str] | None = None) -> int:
    """The archive mtime from ``SOURCE_DATE_EPOCH`` (reproducible-builds.org), default 0.

    Unset or empty means 0. Raises ``InvalidSourceDateEpochError`` when the value is
    not a decimal integer in ``0 .. 8**11-1`` (the ustar mtime range).
    """
    value = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH", "")
    if value == "":
        return 0
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_MTIME:
        raise InvalidSourceDateEpochError(
            f"SOURCE_DATE_EPOCH={value[:40]!r} is not a Unix time in seconds",
            hint="set it to a non-negative integer, e.g. "
            "SOURCE_DATE_EPOCH=$(git log -1 --format=%ct), or unset it for 0",
        )
    return int(value)


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One in-memory archive entry: a file (``data``), a directory or a symbolic link.

    ``path`` is relative and normalised (``a/b``: no leading ``/``, no ``.``/``..``/empty
    components, no trailing ``/``, no backslash or NUL). Exactly one of ``data`` (file),
    ``is_dir`` and ``symlink`` (the link target) says what it is. ``mode`` ``None``
    means the normalised default (0644 files, 0755 directories); an explicit mode is
    kept as given (0..0o1777: no setuid/setgid). Raises ``PackInputError`` when invalid.
    """

    path: str
    data: bytes | None = None
    mode: int | None = None
    is_dir: bool = False
    uid: int = 0
    gid: int = 0
    symlink: str | None = None

    def __post_init__(self) -> None:
        problem = _path_problem(self.path)
        if problem:
            raise PackInputError(f"entry {self.path!r}: {problem}", hint=_PATH_HINT)
        kinds = (self.data is not None) + self.is_dir + (self.symlink is not None)
        if kinds != 1:
            raise PackInputError(
                f"entry {self.path!r} must be exactly one of a file (data), "
                "a directory (is_dir) or a symbolic link (symlink)",
                hint="pass data=b'' for an empty file",
            )
        if self.mode is not None:
            _check_mode(self.mode, self.path)
        if self.data is not None and not isinstance(self.data, bytes):
            raise PackInputError(
                f"entry {self.path!r}: data must be bytes, not {type(self.data).__name__}",
                hint="encode text first, e.g. text.encode('utf-8')",
            )
        _check_owner((self.uid, self.gid), self.path)

    @property
    def kind(self) -> _Kind:
        """``"file"``, ``"dir"`` or ``"symlink"``."""
        if self.is_dir:
            return "dir"
        return "symlink" if self.symlink is not None else "file"


@dataclass(frozen=True, slots=True)
class ArchiveDigests:
    """What a streaming pack wrote: ``digest`` (sha256 of the compressed bytes, the
    OCI blob digest), ``diff_id`` (sha256 of the uncompressed tar) and ``size``
    (compressed length)."""

    digest: str
    diff_id: str
    size: int


@dataclass(frozen=True, slots=True)
class Layer:
    """A packed tar+gzip blob with the digests an OCI image needs."""

    compressed: bytes
    digest: str
    diff_id: str

    @property
    def size(self) -> int:
        """The compressed length, the ``size`` of the layer's descriptor."""
        return len(self.compressed)


# -- public entry points ---------------------------------------------------------------


def pack_tree(
    root: Path,
    *,
    prefix: str = "",
    exclude: Callable[[str], bool] | None = None,
    mtime: int | None = None,
    allow_symlinks: bool = False,
    owner: tuple[int, int] = (0, 0),
    owner_overrides: Callable[[str], tuple[int, int] | None] | None = None,
    mode_overrides: Callable[[str], int | None] | None = None,
) -> bytes:
    """Pack the directory ``root`` into deterministic tar+gzip bytes.

    ``prefix`` (e.g. ``"mychart"``) puts everything under that directory, as helm
    expects of a chart. The callbacks receive each path relative to ``root``
    (POSIX, no prefix, no trailing slash): ``exclude`` returns True to leave a path
    out (a directory with everything under it); ``owner_overrides`` returns the
    ``(uid, gid)`` for a path or ``None`` for ``owner``; ``mode_overrides`` returns an
    explicit mode or ``None`` for the normalised one. ``mtime`` defaults to
    ``source_date_epoch()``.

    Raises ``PackInputError`` for a missing root, a device/fifo/socket, a symbolic link
    (unless ``allow_symlinks``, and then for one whose target leaves the tree), a name
    that is not UTF-8 or holds a backslash, or a file that changes while being read;
    ``InvalidSourceDateEpochError`` for a malformed ``SOURCE_DATE_EPOCH``.
    """
    out = io.BytesIO()
    pack_tree_into(
        out,
        root,
        prefix=prefix,
        exclude=exclude,
        mtime=mtime,
        allow_symlinks=allow_symlinks,
        owner=owner,
        owner_overrides=owner_overrides,
        mode_overrides=mode_overrides,
    )
    return out.getvalue()


def pack_tree_into(
    out: BinaryIO,
    root: Path,
    *,
    prefix: str = "",
    exclude: Callable[[str], bool] | None = None,
    mtime: int | None = None,
    allow_symlinks: bool = False,
    owner: tuple[int, int] = (0, 0),
    owner_overrides: Callable[[str], tuple[int, int] | None] | None = None,
    mode_overrides: Callable[[str], int | None] | None = None,
) -> ArchiveDigests:
    """Like ``pack_tree``, but stream the tar+gzip into ``out`` (file contents are
    never held in memory whole) and return its digests. Raises as ``pack_tree``."""
    fixed_mtime = _resolve_mtime(mtime)
    members = _scan_tree(
        Path(root),
        exclude=exclude,
        allow_symlinks=allow_symlinks,
        owner=owner,
        owner_overrides=owner_overrides,
        mode_overrides=mode_overrides,
    )
    members = _with_prefix(members, prefix, owner)
    return _write(out, _ordered(members), fixed_mtime, compress=True)


def pack_tree_layer(
    root: Path,
    *,
    prefix: str = "",
    exclude: Callable[[str], bool] | None = None,
    mtime: int | None = None,
    allow_symlinks: bool = False,
    owner: tuple[int, int] = (0, 0),
    owner_overrides: Callable[[str], tuple[int, int] | None] | None = None,
    mode_overrides: Callable[[str], int | None] | None = None,
) -> Layer:
    """Like ``pack_tree``, returning the bytes with their digest and diff ID."""
    out = io.BytesIO()
    digests = pack_tree_into(
        out,
        root,
        prefix=prefix,
        exclude=exclude,
        mtime=mtime,
        allow_symlinks=allow_symlinks,
        owner=owner,
        owner_overrides=owner_overrides,
        mode_overrides=mode_overrides,
    )
    return Layer(out.getvalue(), digests.digest, digests.diff_id)


def pack_entries(entries: Iterable[FileEntry], *, mtime: int | None = None) -> bytes:
    """Pack in-memory entries into deterministic tar+gzip bytes.

    Missing parent directories are added (0755, owner 0:0); give a directory its own
    entry to set its owner or mode. Raises ``PackInputError`` for duplicate paths, a
    path under a file or link, or a link whose target leaves the tree or passes through
    another link; ``InvalidSourceDateEpochError`` for a malformed ``SOURCE_DATE_EPOCH``.
    """
    out = io.BytesIO()
    pack_entries_into(out, entries, mtime=mtime)
    return out.getvalue()


def pack_entries_into(
    out: BinaryIO, entries: Iterable[FileEntry], *, mtime: int | None = None
) -> ArchiveDigests:
    """Like ``pack_entries``, streaming into ``out``; returns the digests."""
    members = _entries_to_members(entries)
    return _write(out, members, _resolve_mtime(mtime), compress=True)


def pack_entries_layer(entries: Iterable[FileEntry], *, mtime: int | None = None) -> Layer:
    """Pack in-memory entries as an OCI layer: tar+gzip bytes, digest and diff ID."""
    out = io.BytesIO()
    digests = pack_entries_into(out, entries, mtime=mtime)
    return Layer(out.getvalue(), digests.digest, digests.diff_id)


def tar_entries(entries: Iterable[FileEntry], *, mtime: int | None = None) -> bytes:
    """The uncompressed tar of ``pack_entries``: ``gzip_bytes(tar_entries(e)) ==
    pack_entries(e)``. Raises as ``pack_entries``."""
    out = io.BytesIO()
    _write(out, _entries_to_members(entries), _resolve_mtime(mtime), compress=False)
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """gzip ``data`` deterministically (mtime 0, no name, ``COMPRESSLEVEL``)."""
    out = io.BytesIO()
    with _gzip_writer(out) as gz:
        gz.write(data)
    return out.getvalue()


# -- members: what gets written, in which order -----------------------------------------


@dataclass(frozen=True, slots=True)
class _Member:
    path: str  # archive path, no trailing slash
    kind: _Kind
    mode: int
    uid: int
    gid: int
    target: str = ""
    data: bytes | None = None  # in-memory file content
    source: Path | None = None  # on-disk file, read when written


_PATH_HINT = "use a relative POSIX path such as 'dir/file.yaml'"


def _path_problem(path: str) -> str:
    if not isinstance(path, str) or not path:
        return "path must be a non-empty string"
    if "\x00" in path or "\\" in path:
        return "path contains a NUL or backslash character"
    if path.startswith("/"):
        return "path is absolute"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "path is not normalised (empty, '.' or '..' component, or trailing '/')"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "path is not valid UTF-8"
    return ""


def _check_owner(owner: tuple[int, int], path: str) -> None:
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in owner):
        raise PackInputError(
            f"entry {path!r}: uid/gid {owner!r} must be non-negative integers",
            hint="use 0 for root, e.g. 10001 for the service user",
        )


def _check_mode(mode: int, path: str) -> None:
    if not isinstance(mode, int) or not 0 <= mode <= 0o1777:
        raise PackInputError(
            f"entry {path!r}: mode {mode!r} is not a permission mode in 0..0o1777",
            hint="setuid/setgid bits and file-type bits are not allowed; use e.g. 0o755",
        )


def symlink_target_problem(link: str, target: str, symlinks: Collection[str]) -> str:
    """Why the symbolic link at ``link`` (a normalised relative path in a tree) must not
    point at ``target``, or ``""`` when it may.

    A target is allowed when it is relative, resolves inside the tree and does not pass
    through another link of the tree (``symlinks``, the paths of all links in it) on the
    way: a link followed by more components could lead anywhere its own target does,
    and ``..`` after it would leave the tree from wherever that is.
    """
    if not target:
        return "has an empty link target"
    if "\x00" in target or "\\" in target:
        return "has a link target containing a NUL or backslash character"
    if target.startswith("/"):
        return f"links to the absolute path {target[:200]!r}"
    parts = link.split("/")[:-1]
    components = [c for c in target.split("/") if c not in ("", ".")]
    for index, component in enumerate(components):
        if component == "..":
            if not parts:
                return f"links to {target[:200]!r}, outside the tree"
            parts.pop()
            continue
        parts.append(component)
        if index < len(components) - 1 and "/".join(parts) in symlinks:
            return (
                f"links to {target[:200]!r}, through the symbolic link "
                f"{'/'.join(parts)!r}; link chains are not allowed"
            )
    return ""


def _ordered(members: list[_Member]) -> list[_Member]:
    """Sort bytewise and check the tree is consistent: unique paths, every parent a
    directory entry, every link target inside the tree."""
    ordered = sorted(members, key=lambda m: m.path.encode("utf-8"))
    kinds: dict[str, _Kind] = {}
    for member in ordered:
        if member.path in kinds:
            raise PackInputError(
                f"entry {member.path!r} appears more than once",
                hint="give each path one entry",
            )
        parent = member.path.rpartition("/")[0]
        if parent and kinds.get(parent) != "dir":
            raise PackInputError(
                f"entry {member.path!r}: its parent {parent!r} is not a directory entry",
                hint="a path cannot be under a file or a symbolic link",
            )
        kinds[member.path] = member.kind
    symlinks = {m.path for m in ordered if m.kind == "symlink"}
    for member in ordered:
        if member.kind == "symlink":
            problem = symlink_target_problem(member.path, member.target, symlinks)
            if problem:
                raise PackInputError(
                    f"symbolic link {member.path!r} {problem}",
                    hint="links must be relative and stay inside the packed tree",
                )
    return ordered


def _entries_to_members(entries: Iterable[FileEntry]) -> list[_Member]:
    members: list[_Member] = []
    explicit: set[str] = set()
    for entry in entries:
        if not isinstance(entry, FileEntry):
            raise PackInputError(
                f"expected a FileEntry, got {type(entry).__name__}",
                hint="wrap content in FileEntry",
            )
        kind = entry.kind
        default_mode = {"dir": 0o755, "file": 0o644, "symlink": 0o777}[kind]
        members.append(
            _Member(
                path=entry.path,
                kind=kind,
                mode=default_mode if entry.mode is None or kind == "symlink" else entry.mode,
                uid=entry.uid,
                gid=entry.gid,
                target=entry.symlink or "",
                data=entry.data,
            )
        )
        explicit.add(entry.path)
    implicit: set[str] = set()
    for member in members:
        parts = member.path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in explicit:
                implicit.add(parent)
    members.extend(_Member(path, "dir", 0o755, 0, 0) for path in implicit)
    return _ordered(members)


def _with_prefix(members: list[_Member], prefix: str, owner: tuple[int, int]) -> list[_Member]:
    prefix = prefix.rstrip("/")
    if not prefix:
        return members
    problem = _path_problem(prefix)
    if problem:
        raise PackInputError(f"prefix {prefix!r}: {problem}", hint="use e.g. 'mychart'")
    parts = prefix.split("/")
    dirs = [
        _Member("/".join(parts[: i + 1]), "dir", 0o755, owner[0], owner[1])
        for i in range(len(parts))
    ]
    moved = [
        _Member(f"{prefix}/{m.path}", m.kind, m.mode, m.uid, m.gid, m.target, m.data, m.source)
        for m in members
    ]
    return dirs + moved


def _scan_tree(
    root: Path,
    *,
    exclude: Callable[[str], bool] | None,
    allow_symlinks: bool,
    owner: tuple[int, int],
    owner_overrides: Callable[[str], tuple[int, int] | None] | None,
    mode_overrides: Callable[[str], int | None] | None,
) -> list[_Member]:
    if not root.is_dir():
        raise PackInputError(
            f"cannot pack {root}: it is not a directory", hint="pass the directory to pack"
        )
    _check_owner(owner, "(default owner)")
    members: list[_Member] = []

    def visit(directory: Path, rel_dir: str) -> None:
        try:
            with os.scandir(directory) as listing:
                found = list(listing)
        except OSError as exc:
            raise PackInputError(
                f"cannot read {directory}: {exc.strerror}", hint="check the permissions"
            ) from None
        for item in found:
            name = item.name
            rel = f"{rel_dir}/{name}" if rel_dir else name
            problem = _path_problem(rel)
            if problem:
                raise PackInputError(f"cannot pack {root / rel!r}: {problem}", hint=_PATH_HINT)
            if exclude is not None and exclude(rel):
                continue
            try:
                st = item.stat(follow_symlinks=False)
                target = os.readlink(item.path) if stat.S_ISLNK(st.st_mode) else ""
            except OSError as exc:
                raise PackInputError(
                    f"cannot read {item.path}: {exc.strerror}",
                    hint="check the permissions, and that nothing changes the tree while packing",
                ) from None
            uid, gid = (owner_overrides(rel) if owner_overrides else None) or owner
            _check_owner((uid, gid), rel)
            explicit_mode = mode_overrides(rel) if mode_overrides else None
            if explicit_mode is not None:
                _check_mode(explicit_mode, rel)
            if stat.S_ISDIR(st.st_mode):
                mode = 0o755 if explicit_mode is None else explicit_mode
                members.append(_Member(rel, "dir", mode, uid, gid))
                visit(Path(item.path), rel)
            elif stat.S_ISREG(st.st_mode):
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                mode = mode if explicit_mode is None else explicit_mode
                members.append(_Member(rel, "file", mode, uid, gid, source=Path(item.path)))
            elif stat.S_ISLNK(st.st_mode):
                if not allow_symlinks:
                    raise PackInputError(
                        f"cannot pack {item.path}: it is a symbolic link",
                        hint="replace it with the file it points to, exclude it, "
                        "or pass allow_symlinks=True",
                    )
                members.append(_Member(rel, "symlink", 0o777, uid, gid, target=target))
            else:
                raise PackInputError(
                    f"cannot pack {item.path}: it is a {_special_kind(st.st_mode)}",
                    hint="only regular files and directories can be packed; exclude it",
                )

    visit(root, "")
    return members


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def _resolve_mtime(mtime: int | None) -> int:
    if mtime is None:
        return source_date_epoch()
    if isinstance(mtime, bool) or not isinstance(mtime, int) or not 0 <= mtime <= _MAX_MTIME:
        raise PackInputError(
            f"mtime {mtime!r} is not a Unix time in 0..{_MAX_MTIME}",
            hint="pass whole seconds since the epoch, or None for SOURCE_DATE_EPOCH",
        )
    return mtime


# -- writing ---------------------------------------------------------------------------


class _HashingSink:
    """Counts and hashes what passes through on its way to ``out`` (if any)."""

    def __init__(self, out: BinaryIO | _HashingSink | gzip.GzipFile | None) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        if self._out is not None:
            self._out.write(data)
        return len(data)

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256.hexdigest()}"


def _gzip_writer(out: BinaryIO | _HashingSink) -> gzip.GzipFile:
    return gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=COMPRESSLEVEL, mtime=0)


def _write(out: BinaryIO, members: list[_Member], mtime: int, *, compress: bool) -> ArchiveDigests:
    compressed = _HashingSink(out)
    if not compress:
        tar_sink = _HashingSink(compressed)
        _write_tar(tar_sink, members, mtime)
        return ArchiveDigests(compressed.digest, tar_sink.digest, compressed.size)
    with _gzip_writer(compressed) as gz:
        tar_sink = _HashingSink(gz)
        _write_tar(tar_sink, members, mtime)
    return ArchiveDigests(compressed.digest, tar_sink.digest, compressed.size)


def _write_tar(sink: _HashingSink, members: list[_Member], mtime: int) -> None:
    for member in members:
        if member.kind == "file" and member.data is None:
            _write_disk_file(sink, member, mtime)
        else:
            data = member.data or b""
            sink.write(_header(member, len(data), mtime))
            if data:
                sink.write(data)
                sink.write(_padding(len(data)))
    sink.write(b"\0" * (2 * BLOCK_SIZE))
    sink.write(_padding(sink.size, RECORD_SIZE))


def _write_disk_file(sink: _HashingSink, member: _Member, mtime: int) -> None:
    assert member.source is not None
    try:
        fd = os.open(member.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise PackInputError(
            f"cannot read {member.source}: {exc.strerror}",
            hint="check the permissions, and that nothing changes the tree while packing",
        ) from None
    with os.fdopen(fd, "rb") as source:
        st = os.fstat(source.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PackInputError(
                f"{member.source} changed while packing", hint="pack a tree nobody is editing"
            )
        size = st.st_size
        sink.write(_header(member, size, mtime))
        remaining = size
        while remaining:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                raise PackInputError(
                    f"{member.source} shrank while packing", hint="pack a tree nobody is editing"
                )
            sink.write(chunk)
            remaining -= len(chunk)
        sink.write(_padding(size))


def _header(member: _Member, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(member.path)
    info.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}[
        member.kind
    ]
    info.mode = member.mode
    info.uid = member.uid
    info.gid = member.gid
    info.uname = ""
    info.gname = ""
    info.mtime = mtime
    info.size = size if member.kind == "file" else 0
    info.linkname = member.target
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _padding(length: int, unit: int = BLOCK_SIZE) -> bytes:
    return b"\0" * (-length % unit)
