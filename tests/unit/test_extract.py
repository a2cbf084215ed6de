"""Safe extraction: every hostile archive is refused with a clear message, and nothing
is written in or next to the destination; honest archives round-trip."""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocicore.errors import InvalidInputError, ToolkitError
from ocicore.extract import (
    ExtractDestinationError,
    ExtractLimits,
    MalformedArchiveError,
    UnsafeArchiveError,
    safe_extract,
    safe_extract_bytes,
)
from ocicore.tarpack import pack_tree

GiB = 1 << 30
MiB = 1 << 20


# -- building hostile archives ---------------------------------------------------------


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, *, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _tar(*members: tuple[tarfile.TarInfo, bytes], compress: bool = True) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return zlib.compress(raw.getvalue(), wbits=31) if compress else raw.getvalue()


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = _info(name, size=len(data))
    info.mode = mode
    return info, data


def _gzip_stream_header() -> bytes:
    # magic, deflate, no flags, mtime 0, max compression, OS unknown
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"


def _many_entries_tgz(count: int) -> bytes:
    """``count`` empty files, built by patching one ustar header (fast, memory-light)."""
    template = bytearray(_info("0" * 7).tobuf(tarfile.USTAR_FORMAT))
    template[148:156] = b" " * 8
    base = sum(template) - sum(b"0" * 7)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
    chunks: list[bytes] = []
    block = bytearray()
    for number in range(count):
        name = b"%07d" % number
        header = bytearray(template)
        header[0:7] = name
        header[148:156] = b"%06o\0 " % (base + sum(name))
        block += header
        if len(block) >= MiB:
            chunks.append(deflate.compress(bytes(block)))
            block.clear()
    block += b"\0" * 1024
    chunks.append(deflate.compress(bytes(block)) + deflate.flush())
    return b"".join(chunks)


def _zero_bomb(path: Path, size: int) -> None:
    """A valid tar+gzip holding one ``size``-byte file of zeros, written in ~1 ms per
    GiB: one MiB of zeros is deflated once, after a full flush (so it refers to nothing
    before it), and that segment is repeated."""
    header = _info("big", size=size).tobuf(tarfile.PAX_FORMAT)
    tail = b"\0" * (-size % 512 + 1024)
    zeros = bytes(MiB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(header)
    with path.open("wb") as out:
        out.write(_gzip_stream_header())
        out.write(deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH))
        segment = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
        for _ in range(size // MiB):
            out.write(segment)
            crc = zlib.crc32(zeros, crc)
        out.write(deflate.compress(tail) + deflate.flush())
        crc = zlib.crc32(tail, crc)
        out.write(struct.pack("<II", crc, (len(header) + size + len(tail)) & 0xFFFFFFFF))


@pytest.fixture(scope="module")
def one_gib_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.tgz"
    _zero_bomb(path, GiB)
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The directory that holds the destination and nothing else: whatever appears in
    it besides a successful ``out`` was written outside the target."""
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


def _refused(
    archive: bytes | Path,
    work: Path,
    match: str,
    *,
    limits: ExtractLimits | None = None,
    error: type[ToolkitError] = UnsafeArchiveError,
) -> ToolkitError:
    dest = work / "out"
    with pytest.raises(error, match=match) as caught:
        if isinstance(archive, Path):
            safe_extract(archive, dest, limits=limits or ExtractLimits())
        else:
            safe_extract_bytes(archive, dest, limits=limits or ExtractLimits())
    assert list(work.iterdir()) == [], "something was left in or next to the destination"
    return caught.value


def _tree(root: Path) -> Iterator[tuple[str, str, int, bytes | str]]:
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            yield rel, "link", 0, os.readlink(path)
        elif stat.S_ISDIR(st.st_mode):
            yield rel, "dir", stat.S_IMODE(st.st_mode), b""
        else:
            yield rel, "file", stat.S_IMODE(st.st_mode), path.read_bytes()


# -- the hostile archives of the issue -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("../x", r"archive member '\.\./x': path escapes the extraction directory"),
        ("a/../../x", r"archive member 'a/\.\./\.\./x': path escapes the extraction directory"),
        ("/etc/x", r"archive member '/etc/x': is an absolute path"),
        ("a\\..\\..\\x", r"NUL or backslash"),
    ],
)
def test_member_names_leaving_the_tree_are_refused(work: Path, name: str, rule: str) -> None:
    error = _refused(_tar(_file("ok.txt"), _file(name)), work, rule)
    assert isinstance(error, UnsafeArchiveError)
    assert error.member == name
    assert error.hint
    assert not (work.parent / "x").exists()
    assert not Path("/etc/x").exists()


def test_absolute_path_into_the_test_directory_is_refused(tmp_path: Path, work: Path) -> None:
    target = tmp_path / "planted"
    _refused(_tar(_file(str(target))), work, r"is an absolute path")
    assert not target.exists()


def test_symlink_to_root_is_refused(work: Path) -> None:
    archive = _tar((_info("root", tarfile.SYMTYPE, link="/"), b""))
    _refused(archive, work, r"archive member 'root': is a symbolic link \(to '/'\); symbolic links")
    _refused(
        archive,
        work,
        r"archive member 'root': symbolic link links to the absolute path '/'",
        limits=ExtractLimits(allow_symlinks=True),
    )


@pytest.mark.parametrize(
    ("members", "rule"),
    [
        ([(_info("up", tarfile.SYMTYPE, link="../../etc"), b"")], r"'up': .*outside the tree"),
        (
            [
                (_info("d", tarfile.DIRTYPE), b""),
                (_info("d/up", tarfile.SYMTYPE, link="../.."), b""),
            ],
            r"'d/up': .*outside the tree",
        ),
        # A link made to point inside, then written through.
        (
            [(_info("l", tarfile.SYMTYPE, link="."), b""), _file("l/x")],
            r"archive member 'l/x': lies under 'l', which is a symlink",
        ),
        # Each link is inside on its own; together 'm' resolves to the parent of dest.
        (
            [
                (_info("l", tarfile.SYMTYPE, link="."), b""),
                (_info("m", tarfile.SYMTYPE, link="l/.."), b""),
            ],
            r"'m': .*through the symbolic link 'l'",
        ),
    ],
)
def test_symlinks_escaping_when_allowed_are_refused(
    work: Path, members: list[tuple[tarfile.TarInfo, bytes]], rule: str
) -> None:
    _refused(_tar(*members), work, rule, limits=ExtractLimits(allow_symlinks=True))


@pytest.mark.parametrize("link", ["../../etc/passwd", "/etc/passwd", "inside.txt"])
def test_hard_links_are_refused(work: Path, link: str) -> None:
    archive = _tar(_file("inside.txt"), (_info("h", tarfile.LNKTYPE, link=link), b""))
    _refused(archive, work, rf"archive member 'h': is a hard link \(to '{link}'\); hard links")


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        (tarfile.CHRTYPE, "character device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "fifo"),
    ],
)
def test_device_files_are_refused(work: Path, kind: bytes, what: str) -> None:
    info = _info("dev/null", kind)
    info.devmajor, info.devminor = 1, 3
    _refused(_tar(_file("ok"), (info, b"")), work, rf"'dev/null': is a {what}; device files")


def test_one_hundred_thousand_entries_are_refused(work: Path) -> None:
    archive = _many_entries_tgz(100_000)
    started = time.monotonic()
    error = _refused(archive, work, r"the archive has more than 10000 entries")
    assert "max_entries" in error.hint
    assert time.monotonic() - started < 10


def test_one_gib_file_in_one_mib_archive_is_refused_by_its_declared_size(
    work: Path, one_gib_bomb: Path
) -> None:
    assert one_gib_bomb.stat().st_size < 1.2 * MiB
    started = time.monotonic()
    _refused(
        one_gib_bomb,
        work,
        r"archive member 'big': declares 1073741824 bytes, over the per-file limit of 268435456",
    )
    assert time.monotonic() - started < 1


def test_one_gib_file_is_refused_by_its_ratio_while_streaming(
    work: Path, one_gib_bomb: Path
) -> None:
    generous = ExtractLimits(max_file_bytes=2 * GiB, max_total_bytes=2 * GiB)
    started = time.monotonic()
    error = _refused(
        one_gib_bomb,
        work,
        r"archive member 'big': the archive expands more than 200 times its compressed size",
        limits=generous,
    )
    assert "max_ratio" in error.hint
    assert time.monotonic() - started < 1


def test_the_bomb_is_a_valid_archive(tmp_path: Path) -> None:
    # The bomb builder must make a real archive, or the tests above prove nothing.
    small = tmp_path / "small.tgz"
    _zero_bomb(small, 3 * MiB)
    files = safe_extract(small, tmp_path / "out", limits=ExtractLimits(max_ratio=10_000))
    assert files == ["big"]
    assert (tmp_path / "out" / "big").read_bytes() == bytes(3 * MiB)


# -- other limits and rules -------------------------------------------------------------


def test_total_size_is_capped(work: Path) -> None:
    archive = _tar(_file("a", b"x" * 600), _file("b", b"y" * 600))
    _refused(
        archive,
        work,
        r"archive member 'b': brings the archive's content over the total limit of 1000",
        limits=ExtractLimits(max_total_bytes=1000),
    )


def test_huge_extended_header_is_refused_before_it_is_read_into_memory(work: Path) -> None:
    info = _info("x", size=1)
    info.pax_headers = {"comment": os.urandom(3 * MiB).hex()}
    raw = info.tobuf(tarfile.PAX_FORMAT) + b"x" + b"\0" * 511 + b"\0" * 1024
    _refused(raw, work, r"the first archive member: a tar header is larger than 1048576 bytes")


@pytest.mark.parametrize(
    ("members", "rule"),
    [
        ([_file("a"), _file("a")], r"'a': appears more than once"),
        ([_file("a"), _file("a/b")], r"'a/b': lies under 'a', which is a file"),
        ([_file("a/b"), _file("a")], r"'a': is a file, but the archive has a dir there too"),
    ],
)
def test_conflicting_members_are_refused(
    work: Path, members: list[tuple[tarfile.TarInfo, bytes]], rule: str
) -> None:
    _refused(_tar(*members), work, rule)


def test_truncated_and_foreign_archives_are_refused(work: Path) -> None:
    whole = _tar(_file("a", os.urandom(100_000)))
    _refused(whole[: len(whole) // 2], work, r"truncated", error=MalformedArchiveError)
    _refused(
        b"\x1f\x8b" + os.urandom(2000), work, r"gzip stream is corrupt", error=MalformedArchiveError
    )
    _refused(b"not a tar at all" * 100, work, r"not a readable tar", error=MalformedArchiveError)
    _refused(
        b"\xfd7zXZ\x00" + b"\0" * 100, work, r"compressed with xz", error=MalformedArchiveError
    )


def test_destination_must_be_new_or_empty(work: Path) -> None:
    archive = _tar(_file("a"))
    (work / "out").mkdir()
    (work / "out" / "keep").write_bytes(b"mine")
    with pytest.raises(ExtractDestinationError, match=r"it is not empty"):
        safe_extract_bytes(archive, work / "out")
    assert sorted(p.name for p in work.rglob("*")) == ["keep", "out"]
    (work / "out" / "keep").unlink()
    assert safe_extract_bytes(archive, work / "out") == ["a"]
    assert sorted(p.name for p in work.iterdir()) == ["out"]


def test_modes_are_normalised_and_never_setuid(work: Path) -> None:
    archive = _tar(
        _file("suid", mode=0o4777), _file("private", mode=0o600), _file("exe", mode=0o700)
    )
    safe_extract_bytes(archive, work / "out")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (work / "out").iterdir()}
    assert modes == {"suid": 0o755, "private": 0o644, "exe": 0o755}
    assert stat.S_IMODE((work / "out").stat().st_mode) == 0o755


# -- honest archives ------------------------------------------------------------------


def test_round_trip_gives_the_same_files(tmp_path: Path, work: Path) -> None:
    source = tmp_path / "chart"
    (source / "templates").mkdir(parents=True)
    (source / "Chart.yaml").write_bytes(b"apiVersion: v2\nname: demo\nversion: 1.0.0\n")
    (source / "templates" / "deploy.yaml").write_bytes(os.urandom(50_000))
    (source / "run.sh").write_bytes(b"#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    (source / "empty").mkdir()
    (source / "current").symlink_to("templates/deploy.yaml")
    data = pack_tree(source, prefix="demo", allow_symlinks=True)
    names = safe_extract_bytes(data, work / "out", limits=ExtractLimits(allow_symlinks=True))
    assert names == [
        "demo",
        "demo/Chart.yaml",
        "demo/current",
        "demo/empty",
        "demo/run.sh",
        "demo/templates",
        "demo/templates/deploy.yaml",
    ]
    assert list(_tree(work / "out" / "demo")) == list(_tree(source))


def test_path_and_stream_inputs_and_gzip_members(tmp_path: Path, work: Path) -> None:
    raw = _tar(_file("./a/one", b"1"), (_info("./", tarfile.DIRTYPE), b""), compress=False)
    cut = len(raw) // 2
    # Two gzip members, as `cat a.gz b.gz` makes.
    two_members = zlib.compress(raw[:cut], wbits=31) + zlib.compress(raw[cut:], wbits=31)
    archive = tmp_path / "in.tgz"
    archive.write_bytes(two_members)
    assert safe_extract(archive, work / "from-path") == ["a/one"]
    with archive.open("rb") as stream:
        assert safe_extract(stream, work / "from-stream") == ["a/one"]
    assert safe_extract_bytes(raw, work / "from-plain-tar") == ["a/one"]
    for name in ("from-path", "from-stream", "from-plain-tar"):
        assert (work / name / "a" / "one").read_bytes() == b"1"


def test_limits_must_be_positive() -> None:
    with pytest.raises(InvalidInputError, match=r"max_entries must be a positive number"):
        ExtractLimits(max_entries=0)
