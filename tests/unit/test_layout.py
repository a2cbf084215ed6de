"""OCILayout: create/read/write, tags per repository, tar round trip, and refusal of
malformed layouts and unsafe tars; ``copy`` between two layouts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

from ocicore.copy import copy
from ocicore.digest import Digest
from ocicore.errors import DigestMismatchError, InvalidInputError, LayoutError, NotFoundError
from ocicore.layout import (
    REF_NAME_ANNOTATION,
    REPOSITORY_ANNOTATION,
    LayoutNotFoundError,
    OCILayout,
)
from ocicore.models import (
    EMPTY_JSON,
    OCI_EMPTY_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
)
from ocicore.store import ContentStore

LAYER = "application/vnd.oci.image.layer.v1.tar"


def _push_image(store: ContentStore, repo: str, layers: list[bytes], tag: str | None) -> bytes:
    store.push_blob(repo, EMPTY_JSON)
    for data in layers:
        store.push_blob(repo, data)
    manifest = Manifest(
        schema_version=2,
        media_type=OCI_MANIFEST,
        config=Descriptor.of(OCI_EMPTY_CONFIG, EMPTY_JSON),
        layers=[Descriptor.of(LAYER, data) for data in layers],
    )
    data = manifest.to_json()
    store.push_manifest(repo, data, OCI_MANIFEST, tag=tag)
    return data


def _push_index(store: ContentStore, repo: str, tag: str) -> tuple[bytes, list[bytes]]:
    children = [
        _push_image(store, repo, [b"amd64 layer", os.urandom(1000)], None),
        _push_image(store, repo, [b"arm64 layer"], None),
    ]
    index = Index(
        schema_version=2,
        media_type=OCI_INDEX,
        manifests=[
            Descriptor(
                media_type=OCI_MANIFEST,
                digest=Digest.of(child),
                size=len(child),
                platform=Platform(architecture=arch, os="linux"),
            )
            for child, arch in zip(children, ["amd64", "arm64"], strict=True)
        ],
    )
    data = index.to_json()
    store.push_manifest(repo, data, OCI_INDEX, tag=tag)
    return data, children


@pytest.fixture
def layout(tmp_path: Path) -> OCILayout:
    return OCILayout(tmp_path / "layout", create=True)


def test_create_writes_the_spec_files(layout: OCILayout) -> None:
    assert json.loads((layout.path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout.path / "index.json").read_text())
    assert index == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    assert (layout.path / "blobs" / "sha256").is_dir()
    # opening again (with or without create) keeps it
    OCILayout(layout.path, create=True)
    OCILayout(layout.path)


def test_create_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "stray").write_text("x")
    with pytest.raises(LayoutError, match="not an OCI layout and is not empty"):
        OCILayout(tmp_path, create=True)
    with pytest.raises(LayoutError, match="no oci-layout file"):
        OCILayout(tmp_path)


def test_push_and_read_back(layout: OCILayout, tmp_path: Path) -> None:
    layers = [os.urandom(5000), b"second"]
    data = _push_image(layout, "apps/one", layers, "v1")
    digest = Digest.of(data)
    desc = layout.resolve("apps/one", "v1")
    assert (desc.digest, desc.media_type, desc.size) == (digest, OCI_MANIFEST, len(data))
    assert layout.resolve("apps/one", digest).digest == digest
    fetched = layout.get_manifest("apps/one", "v1")
    assert fetched.data == data and fetched.digest == digest
    manifest = fetched.parse()
    assert isinstance(manifest, Manifest)
    for i, blob in enumerate(manifest.layers):
        assert layout.blob_exists("any/repo", blob.digest)
        dest = tmp_path / f"out{i}"
        layout.fetch_blob("apps/one", blob, dest)
        assert dest.read_bytes() == layers[i]
    assert layout.list_tags("apps/one") == ["v1"]
    assert layout.push_blob("apps/one", layers[0]) == "skipped"
    entry = json.loads((layout.path / "index.json").read_text())["manifests"][0]
    assert entry["annotations"] == {
        REF_NAME_ANNOTATION: "v1",
        REPOSITORY_ANNOTATION: "apps/one",
    }
    # no temporary files are left behind
    assert not [p for p in layout.path.rglob(".*")]


def test_tag_moves_and_repositories_are_separate(layout: OCILayout) -> None:
    first = _push_image(layout, "apps/one", [b"a"], "stable")
    second = _push_image(layout, "apps/one", [b"b"], "stable")
    other = _push_image(layout, "apps/two", [b"c"], "stable")
    assert layout.resolve("apps/one", "stable").digest == Digest.of(second)
    assert layout.resolve("apps/two", "stable").digest == Digest.of(other)
    entries = json.loads((layout.path / "index.json").read_text())["manifests"]
    assert len(entries) == 2
    # the old manifest stays reachable by digest, like an untagged registry manifest
    assert layout.get_manifest("apps/one", Digest.of(first)).data == first
    with pytest.raises(LayoutNotFoundError):
        layout.resolve("apps/three", "stable")
    with pytest.raises(NotFoundError):  # one except clause for registries and layouts
        layout.list_tags("apps/three")
    assert layout.list_tags("apps/three", missing_ok=True) == []


def test_entries_written_by_other_tools_apply_to_every_repository(layout: OCILayout) -> None:
    data = _push_image(layout, "x", [b"a"], None)
    index = json.loads((layout.path / "index.json").read_text())
    index["manifests"] = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": str(Digest.of(data)),
            "size": len(data),
            "annotations": {REF_NAME_ANNOTATION: "1.0"},
        },
        {
            "mediaType": OCI_MANIFEST,
            "digest": str(Digest.of(data)),
            "size": len(data),
            "annotations": {REF_NAME_ANNOTATION: "registry.example/ns/app:2.0"},
        },
    ]
    (layout.path / "index.json").write_text(json.dumps(index))
    assert layout.resolve("whatever/repo", "1.0").digest == Digest.of(data)
    assert layout.list_tags("ns/app") == ["1.0", "2.0"]
    assert layout.list_tags("other") == ["1.0"]


def test_untagged_manifest_is_a_blob_only(layout: OCILayout) -> None:
    data = _push_image(layout, "x", [b"a"], None)
    assert json.loads((layout.path / "index.json").read_text())["manifests"] == []
    assert layout.resolve("x", Digest.of(data)).media_type == OCI_MANIFEST
    # a blob that is not a manifest is not found as one
    with pytest.raises(LayoutNotFoundError, match="not a manifest"):
        layout.get_manifest("x", Digest.of(b"a"))


def test_manifest_with_missing_blob_is_refused(layout: OCILayout) -> None:
    manifest = Manifest(
        schema_version=2,
        media_type=OCI_MANIFEST,
        config=Descriptor.of(OCI_EMPTY_CONFIG, EMPTY_JSON),
        layers=[Descriptor.of(LAYER, b"never pushed")],
    )
    layout.push_blob("x", EMPTY_JSON)
    with pytest.raises(LayoutError, match=r"references sha256:.*not in the layout"):
        layout.push_manifest("x", manifest.to_json(), OCI_MANIFEST, tag="v1")


def test_push_blob_refuses_wrong_digest(layout: OCILayout) -> None:
    with pytest.raises(DigestMismatchError):
        layout.push_blob("x", b"content", Digest.of(b"other"))
    assert not layout.blob_exists("x", Digest.of(b"other"))
    assert not [p for p in (layout.path / "blobs" / "sha256").iterdir()]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"schemaVersion": 2}', "manifests"),
        (b'{"schemaVersion": 2, "manifests": [{"digest": "sha256:zz"}]}', "not a valid OCI"),
        (b'{"schemaVersion": 2, "manifests": [], "manifests": []}', "duplicate key"),
        (
            b'{"schemaVersion": 2, "mediaType": "application/json", "manifests": []}',
            "mediaType",
        ),
    ],
)
def test_malformed_index_json(layout: OCILayout, content: bytes, message: str) -> None:
    (layout.path / "index.json").write_bytes(content)
    with pytest.raises(LayoutError, match=message) as info:
        OCILayout(layout.path)
    assert "\n" not in str(info.value)
    assert str(layout.path) in str(info.value)


def test_malformed_oci_layout_file(layout: OCILayout) -> None:
    (layout.path / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(LayoutError, match=r"imageLayoutVersion '2\.0\.0'"):
        OCILayout(layout.path)
    (layout.path / "index.json").unlink()
    (layout.path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    with pytest.raises(LayoutError, match=r"index\.json .* is missing"):
        OCILayout(layout.path)


def test_missing_blob(layout: OCILayout, tmp_path: Path) -> None:
    data = _push_image(layout, "x", [b"layer one"], "v1")
    layer = Descriptor.of(LAYER, b"layer one")
    layout.blob_path(layer.digest).unlink()
    with pytest.raises(LayoutError, match="is missing"):
        layout.fetch_blob("x", layer, tmp_path / "out")
    layout.blob_path(Digest.of(data)).unlink()
    with pytest.raises(LayoutError, match="blob is missing"):
        layout.resolve("x", "v1")
    with pytest.raises(LayoutError, match="blob is missing"):
        layout.get_manifest("x", "v1")
    target = OCILayout(tmp_path / "target", create=True)
    with pytest.raises(LayoutError):
        copy(layout, "x", "v1", target, "x")


def test_corrupt_blob(layout: OCILayout, tmp_path: Path) -> None:
    data = _push_image(layout, "x", [b"layer one"], "v1")
    layer = Descriptor.of(LAYER, b"layer one")
    layout.blob_path(layer.digest).write_bytes(b"layer 0ne")
    with pytest.raises(DigestMismatchError, match="corrupted") as info:
        layout.fetch_blob("x", layer, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))
    layout.blob_path(Digest.of(data)).write_bytes(data.replace(b"schemaVersion", b"schemaversion"))
    with pytest.raises(DigestMismatchError):
        layout.get_manifest("x", "v1")


def test_index_and_copy_between_layouts(layout: OCILayout, tmp_path: Path) -> None:
    index_data, children = _push_index(layout, "multi", "v2")
    target = OCILayout(tmp_path / "target", create=True)
    result = copy(layout, "multi", "v2", target, "mirror/multi")
    assert result.digest == Digest.of(index_data) and result.media_type == OCI_INDEX
    assert result.manifests_copied == 3 and result.tags == ("v2",)
    assert result.blobs_copied == 4  # empty config (shared) + 3 distinct layers
    assert target.get_manifest("mirror/multi", "v2").data == index_data
    for child in children:
        assert target.get_manifest("mirror/multi", Digest.of(child)).data == child
    again = copy(layout, "multi", "v2", target, "mirror/multi")
    assert again.bytes_copied == 0 and again.manifests_skipped == 1
    assert again.manifests_copied == 0
    by_digest = copy(layout, "multi", Digest.of(index_data), target, "mirror/other", tags=["x"])
    assert by_digest.tags == ("x",) and by_digest.bytes_copied == 0


def test_tar_round_trip_is_deterministic(layout: OCILayout, tmp_path: Path) -> None:
    index_data, _ = _push_index(layout, "multi", "v2")
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    layout.write_tar(first)
    os.utime(layout.path / "index.json", (12345, 12345))
    layout.write_tar(second)
    assert (
        hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    )
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert {"index.json", "oci-layout"} <= set(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    assert all(m.mode == (0o755 if m.isdir() else 0o644) for m in members)
    read = OCILayout.from_tar(first, tmp_path / "extracted")
    assert read.get_manifest("multi", "v2").data == index_data


def _tar_with(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(_file("../escape"), b"x")], r"leaves the extraction directory"),
        ([(_file("blobs/../../escape"), b"x")], r"leaves the extraction directory"),
        ([(_file("/etc/evil"), b"x")], r"absolute path"),
        ([(_link("blobs", "/etc", tarfile.SYMTYPE), None)], r"is a link"),
        ([(_link("index.json", "/etc/passwd", tarfile.LNKTYPE), None)], r"is a link"),
        ([(_link("dev", "", tarfile.CHRTYPE), None)], r"device or fifo"),
        ([(_file("index.json"), b"{}"), (_file("./index.json"), b"{}")], r"appears twice"),
    ],
)
def test_from_tar_refuses_unsafe_members(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    archive = _tar_with(tmp_path, members)
    workdir = tmp_path / "work" / "layout"
    with pytest.raises(LayoutError, match=message):
        OCILayout.from_tar(archive, workdir)
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "work" / "escape").exists()


def test_from_tar_limits_and_garbage(layout: OCILayout, tmp_path: Path) -> None:
    _push_image(layout, "x", [os.urandom(10_000)], "v1")
    archive = tmp_path / "layout.tar"
    layout.write_tar(archive)
    with pytest.raises(LayoutError, match="over 1000 bytes"):
        OCILayout.from_tar(archive, tmp_path / "w1", max_bytes=1000)
    with pytest.raises(LayoutError, match="more than 3 entries"):
        OCILayout.from_tar(archive, tmp_path / "w2", max_entries=3)
    (tmp_path / "garbage.tar").write_bytes(os.urandom(3000))
    with pytest.raises(LayoutError, match="not a readable tar"):
        OCILayout.from_tar(tmp_path / "garbage.tar", tmp_path / "w3")
    (tmp_path / "w4").mkdir()
    (tmp_path / "w4" / "x").write_text("x")
    with pytest.raises(LayoutError, match="not empty"):
        OCILayout.from_tar(archive, tmp_path / "w4")


def test_write_tar_skips_temporary_files(layout: OCILayout, tmp_path: Path) -> None:
    _push_image(layout, "x", [b"a"], "v1")
    (layout.path / "blobs" / "sha256" / ".abc.partial-123").write_bytes(b"junk")
    archive = tmp_path / "l.tar"
    layout.write_tar(archive)
    with tarfile.open(archive) as tar:
        assert not [n for n in tar.getnames() if "partial" in n]


class _SlowStore:
    """Delegates to a layout; counts concurrent blob pushes and can fail one blob."""

    def __init__(self, inner: OCILayout, fail: Digest | None = None) -> None:
        self.inner = inner
        self.fail = fail
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def push_blob(
        self,
        repository: str,
        source: bytes | Path,
        digest: Digest | None = None,
        *,
        mount_from: Sequence[str] = (),
    ) -> str:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.05)
            if digest == self.fail:
                raise DigestMismatchError("injected", str(digest), "sha256:" + "0" * 64)
            return self.inner.push_blob(repository, source, digest)
        finally:
            with self.lock:
                self.active -= 1


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []
        self.lock = threading.Lock()

    def start(self, key: str, description: str, total: int | None) -> None:
        with self.lock:
            self.events.append(("start", key, total))

    def advance(self, key: str, amount: int) -> None:
        with self.lock:
            self.events.append(("advance", key, amount))

    def finish(self, key: str, outcome: str) -> None:
        with self.lock:
            self.events.append(("finish", key, outcome))


def test_copy_bounds_parallelism_and_reports_progress(layout: OCILayout, tmp_path: Path) -> None:
    layers = [os.urandom(100 + i) for i in range(8)]
    data = _push_image(layout, "x", layers, "v1")
    target = _SlowStore(OCILayout(tmp_path / "target", create=True))
    recorder = _Recorder()
    result = copy(
        layout, "x", "v1", cast(ContentStore, target), "y", concurrency=3, progress=recorder
    )
    assert result.digest == Digest.of(data) and result.blobs_copied == 9
    assert target.peak == 3
    finished = [e for e in recorder.events if e[0] == "finish"]
    assert len(finished) == 9 and {e[2] for e in finished} == {"done"}
    assert all(e[1].startswith("copy:sha256:") for e in recorder.events)
    assert result.bytes_copied == sum(len(x) for x in layers) + len(EMPTY_JSON)


def test_copy_failure_pushes_no_manifest_and_no_tag(layout: OCILayout, tmp_path: Path) -> None:
    _push_image(layout, "x", [b"good", b"bad"], "v1")
    inner = OCILayout(tmp_path / "target", create=True)
    target = _SlowStore(inner, fail=Digest.of(b"bad"))
    recorder = _Recorder()
    with pytest.raises(DigestMismatchError, match="injected"):
        copy(layout, "x", "v1", cast(ContentStore, target), "y", progress=recorder)
    assert inner.list_tags("y", missing_ok=True) == []
    assert ("finish", f"copy:{Digest.of(b'bad')}", "failed") in recorder.events
    with pytest.raises(InvalidInputError):
        copy(layout, "x", "v1", inner, "y", concurrency=0)
