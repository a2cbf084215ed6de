"""Deterministic tar+gzip packing: same input, same bytes, whatever the host did to it."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocicore.tarpack import (
    COMPRESSLEVEL,
    FileEntry,
    InvalidSourceDateEpochError,
    PackInputError,
    gzip_bytes,
    pack_entries,
    pack_entries_layer,
    pack_tree,
    pack_tree_into,
    pack_tree_layer,
    source_date_epoch,
    tar_entries,
)

LONG_NAME = "templates/" + "very-long-name-" * 8 + ".yaml"  # over ustar's 100 bytes


def _make_tree(root: Path, *, reverse: bool = False) -> None:
    """A small chart-like tree; ``reverse`` creates it in the opposite order, so the
    directory listing order differs."""
    files: list[tuple[str, bytes, bool]] = [
        ("Chart.yaml", b"apiVersion: v2\nname: demo\nversion: 1.0.0\n", False),
        ("values.yaml", b"replicas: 1\n", False),
        ("templates/deployment.yaml", b"kind: Deployment\n" * 50, False),
        (LONG_NAME, b"kind: ConfigMap\n", False),
        ("bin/run.sh", b"#!/bin/sh\necho hi\n", True),
        ("a-b/x", b"x", False),
        ("a/b/c.txt", b"", False),
        ("n\u00e4me.txt", b"unicode name\n", False),
    ]
    for rel, data, executable in reversed(files) if reverse else files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if executable:
            path.chmod(0o777 & ~_current_umask() | 0o100)
    (root / "empty-dir").mkdir(exist_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getmembers()


def _walk(root: Path) -> Iterator[Path]:
    yield from sorted(root.rglob("*"))


# -- determinism -------------------------------------------------------------------------


def test_same_tree_packs_to_identical_bytes_despite_mtimes_umask_and_order(
    tmp_path: Path,
) -> None:
    first_root, second_root = tmp_path / "first", tmp_path / "second"
    old_umask = os.umask(0o022)
    try:
        _make_tree(first_root)
        first = pack_tree(first_root, prefix="demo")
        # Change every mtime, then pack again.
        for number, path in enumerate(_walk(first_root)):
            os.utime(path, (1_000_000 + number, 2_000_000 + number))
        assert pack_tree(first_root, prefix="demo") == first
        # Recreate the tree under another umask (files 0600/0700, dirs 0700), in the
        # reverse order, with other mtimes: still the same bytes.
        os.umask(0o077)
        _make_tree(second_root, reverse=True)
        for path in _walk(second_root):
            os.utime(path, (123, 456))
        assert (second_root / "values.yaml").stat().st_mode & 0o777 == 0o600
        second = pack_tree(second_root, prefix="demo")
    finally:
        os.umask(old_umask)
    assert second == first


def test_pinned_digests_catch_format_drift() -> None:
    # The uncompressed tar depends only on this module and tarfile's header encoding;
    # the compressed digest also on zlib's deflate. A change in either shows up here.
    layer = pack_entries_layer(
        [FileEntry("dir/hello.txt", b"hello\n"), FileEntry("run.sh", b"#!/bin/sh\n", mode=0o755)],
        mtime=0,
    )
    assert layer.diff_id == PINNED_DIFF_ID
    assert layer.digest == PINNED_DIGEST


PINNED_DIFF_ID = "sha256:0eff148e3413d1f49795667bf49819bb603be7cdffdf321b672542e19f9e02ce"
PINNED_DIGEST = "sha256:b0530c4e7355f03a1a39545afcdba6b4e194e07399d175e9b4cf96af6e7b7a9f"


def test_streaming_and_in_memory_variants_agree(tmp_path: Path) -> None:
    _make_tree(tmp_path / "tree")
    data = pack_tree(tmp_path / "tree", mtime=5)
    with (tmp_path / "out.tgz").open("wb") as out:
        digests = pack_tree_into(out, tmp_path / "tree", mtime=5)
    assert (tmp_path / "out.tgz").read_bytes() == data
    layer = pack_tree_layer(tmp_path / "tree", mtime=5)
    assert layer.compressed == data
    assert digests.digest == layer.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert digests.size == layer.size == len(data)
    assert digests.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()


# -- the fields of every entry ----------------------------------------------------------


def test_entries_are_sorted_bytewise_with_every_directory_first(tmp_path: Path) -> None:
    _make_tree(tmp_path / "tree")
    names = [m.name for m in _members(pack_tree(tmp_path / "tree", prefix="demo"))]
    paths = [name.rstrip("/") for name in names]
    assert paths == sorted(paths, key=lambda p: p.encode("utf-8"))
    assert paths[0] == "demo"
    for path in paths:
        parent = path.rpartition("/")[0]
        if parent:
            assert parent in paths
            assert paths.index(parent) < paths.index(path)
    assert "demo/empty-dir" in paths
    assert "demo/a" in paths and "demo/a/b" in paths
    # Bytewise on the whole path, not depth-first: 'a-b/x' sorts before 'a/b' since
    # '-' (0x2d) < '/' (0x2f).
    assert paths.index("demo/a") < paths.index("demo/a-b/x") < paths.index("demo/a/b")


def test_header_fields_are_fixed(tmp_path: Path) -> None:
    _make_tree(tmp_path / "tree")
    for member in _members(pack_tree(tmp_path / "tree", mtime=1_700_000_000)):
        assert member.mtime == 1_700_000_000
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.isdir() or member.isreg()
        # pax records only where ustar cannot hold the name; never times.
        if member.name == LONG_NAME or not member.name.isascii():
            assert set(member.pax_headers) == {"path"}
        else:
            assert member.pax_headers == {}


def test_gzip_header_has_mtime_zero_and_no_file_name(tmp_path: Path) -> None:
    _make_tree(tmp_path / "tree")
    for data in (pack_tree(tmp_path / "tree"), gzip_bytes(b"x"), pack_entries([])):
        assert data[:3] == b"\x1f\x8b\x08"
        assert data[3] == 0  # FLG: no FNAME, FCOMMENT, FEXTRA, FHCRC
        assert data[4:8] == b"\0\0\0\0"  # MTIME
        assert data[9] == 255  # OS: unknown, the same on every host
    assert COMPRESSLEVEL == 6


def test_modes_are_normalised(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "secret-dir").mkdir(parents=True)
    (root / "secret-dir").chmod(0o700)
    for name, mode in (("private", 0o600), ("group-write", 0o664), ("user-exec", 0o700)):
        (root / name).write_bytes(b"x")
        (root / name).chmod(mode)
    (root / "setuid").write_bytes(b"x")
    (root / "setuid").chmod(0o4755)
    modes = {m.name.rstrip("/"): m.mode for m in _members(pack_tree(root))}
    assert modes == {
        "secret-dir": 0o755,
        "private": 0o644,
        "group-write": 0o644,
        "user-exec": 0o755,
        "setuid": 0o755,
    }


def test_owner_and_mode_overrides_and_exclude(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "app" / "data").mkdir(parents=True)
    (root / "app" / "main.py").write_bytes(b"print(1)\n")
    (root / "app" / "data" / "state").write_bytes(b"{}")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_bytes(b"ref")
    data = pack_tree(
        root,
        prefix="srv",
        exclude=lambda rel: rel == ".git",
        owner_overrides=lambda rel: (10001, 10001) if rel.startswith("app/data") else None,
        mode_overrides=lambda rel: 0o700 if rel == "app/data" else None,
    )
    members = {m.name.rstrip("/"): m for m in _members(data)}
    assert sorted(members) == [
        "srv",
        "srv/app",
        "srv/app/data",
        "srv/app/data/state",
        "srv/app/main.py",
    ]
    assert (members["srv/app/data"].uid, members["srv/app/data"].mode) == (10001, 0o700)
    assert members["srv/app/data/state"].gid == 10001
    assert (members["srv/app/main.py"].uid, members["srv"].uid) == (0, 0)


def test_hard_linked_files_are_stored_as_regular_files(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "one").write_bytes(b"same inode")
    os.link(root / "one", root / "two")
    members = _members(pack_tree(root))
    assert [(m.name, m.isreg(), m.size) for m in members] == [
        ("one", True, 10),
        ("two", True, 10),
    ]


# -- what is refused ------------------------------------------------------------------


def test_fifo_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    os.mkfifo(root / "pipe")
    with pytest.raises(PackInputError, match=r"pipe: it is a fifo"):
        pack_tree(root)
    assert _members(pack_tree(root, exclude=lambda rel: rel == "pipe")) == []


def test_symlink_is_refused_unless_allowed(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "charts").mkdir(parents=True)
    (root / "charts" / "real.yaml").write_bytes(b"x")
    (root / "link.yaml").symlink_to("charts/real.yaml")
    with pytest.raises(PackInputError, match=r"link\.yaml: it is a symbolic link") as caught:
        pack_tree(root)
    assert "allow_symlinks=True" in caught.value.hint
    members = {m.name: m for m in _members(pack_tree(root, allow_symlinks=True))}
    assert members["link.yaml"].issym()
    assert members["link.yaml"].linkname == "charts/real.yaml"
    assert members["link.yaml"].mode == 0o777


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/etc/passwd", r"links to the absolute path '/etc/passwd'"),
        ("../outside", r"links to '\.\./outside', outside the tree"),
        ("sub/../../x", r"outside the tree"),
    ],
)
def test_symlink_leaving_the_tree_is_refused_even_when_allowed(
    tmp_path: Path, target: str, message: str
) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "escape").symlink_to(target)
    with pytest.raises(PackInputError, match=message):
        pack_tree(root, allow_symlinks=True)


def test_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackInputError, match=r"is not a directory"):
        pack_tree(tmp_path / "nope")


# -- SOURCE_DATE_EPOCH --------------------------------------------------------------------


def test_source_date_epoch_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_tree(tmp_path / "tree")
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert source_date_epoch() == 0
    assert {m.mtime for m in _members(pack_tree(tmp_path / "tree"))} == {0}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert source_date_epoch() == 1_700_000_000
    assert {m.mtime for m in _members(pack_tree(tmp_path / "tree"))} == {1_700_000_000}
    assert {m.mtime for m in _members(pack_entries([FileEntry("x", b"")]))} == {1_700_000_000}
    # An explicit mtime wins.
    assert {m.mtime for m in _members(pack_tree(tmp_path / "tree", mtime=7))} == {7}


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", " 12", "1e9", "٣", "99999999999999"])
def test_invalid_source_date_epoch_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    with pytest.raises(
        InvalidSourceDateEpochError, match=r"SOURCE_DATE_EPOCH=.* is not a Unix time"
    ):
        pack_entries([FileEntry("x", b"")])
    with pytest.raises(InvalidSourceDateEpochError) as caught:
        source_date_epoch()
    assert "git log" in caught.value.hint


# -- in-memory entries ----------------------------------------------------------------


def test_pack_entries_adds_parents_and_matches_its_uncompressed_form() -> None:
    entries = [
        FileEntry("app/bin/serve", b"#!/bin/sh\n", mode=0o755, uid=10001, gid=10001),
        FileEntry("app/config.json", b"{}"),
        FileEntry("app/data", is_dir=True, uid=10001, gid=10001),
        FileEntry("app/current", symlink="config.json"),
    ]
    data = pack_entries(entries)
    assert data == pack_entries(reversed(entries))
    assert gzip_bytes(tar_entries(entries)) == data
    members = {m.name.rstrip("/"): m for m in _members(data)}
    assert list(members) == [
        "app",
        "app/bin",
        "app/bin/serve",
        "app/config.json",
        "app/current",
        "app/data",
    ]
    assert (members["app"].uid, members["app"].mode) == (0, 0o755)
    assert (members["app/bin/serve"].uid, members["app/bin/serve"].mode) == (10001, 0o755)
    assert members["app/config.json"].mode == 0o644
    assert members["app/current"].issym()
    layer = pack_entries_layer(entries)
    assert layer.compressed == data
    assert layer.diff_id == "sha256:" + hashlib.sha256(tar_entries(entries)).hexdigest()
    assert layer.digest == "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([FileEntry("a", b"1"), FileEntry("a", b"2")], r"'a' appears more than once"),
        ([FileEntry("a", b"1"), FileEntry("a/b", b"2")], r"parent 'a' is not a directory"),
        ([FileEntry("l", symlink="/"), FileEntry("x", b"")], r"absolute path '/'"),
        (
            [FileEntry("l", symlink="."), FileEntry("m", symlink="l/..")],
            r"through the symbolic link 'l'",
        ),
    ],
)
def test_inconsistent_entries_are_refused(entries: list[FileEntry], message: str) -> None:
    with pytest.raises(PackInputError, match=message):
        pack_entries(entries)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "/abs", "data": b""}, "path is absolute"),
        ({"path": "a/../b", "data": b""}, "not normalised"),
        ({"path": "a/", "is_dir": True}, "not normalised"),
        ({"path": "a\\b", "data": b""}, "backslash"),
        ({"path": "", "data": b""}, "non-empty"),
        ({"path": "a"}, "exactly one of"),
        ({"path": "a", "data": b"", "is_dir": True}, "exactly one of"),
        ({"path": "a", "data": b"", "mode": 0o4755}, r"0\.\.0o1777"),
        ({"path": "a", "data": b"", "uid": -1}, "non-negative"),
    ],
)
def test_invalid_file_entry_cannot_exist(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PackInputError, match=message):
        FileEntry(**kwargs)  # type: ignore[arg-type]
