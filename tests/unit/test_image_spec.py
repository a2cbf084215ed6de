"""build.toml validation (one line per mistake, naming the key), and the image builder on
small synthetic bases in OCI layouts: platforms and indexes, account layers, whiteouts,
determinism of the application layer, immutable tags. No sockets, no external tools."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from ocicore.digest import Digest
from ocicore.jsonutil import canonical_json
from ocicore.layout import OCILayout
from ocicore.models import OCI_IMAGE_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST
from ocicore.tarpack import FileEntry, pack_entries_layer
from publisher.image_base import BaseFile, BaseImageError
from publisher.image_build import BuiltImage, build_image, push_image
from publisher.image_layers import ImageLayerError, accounts_layer, python_packages_layer
from publisher.image_spec import (
    ImageSpecError,
    PythonPackagesLayer,
    UserSection,
    load_build_spec,
    parse_build_spec,
    render_labels,
)
from publisher.push import ImmutableTagError

ROOT = Path(__file__).resolve().parents[2]

VALID = """
[base]
layout = "base"
repository = "test/base"
tag = "v1"

[python]
requirements = "req.lock"
wheels = "wheels"

[user]
name = "svc"
uid = 10001
gid = 10001

[[layers]]
kind = "accounts"

[[layers]]
kind = "python-requirements"
dest = "/opt/svc/site-packages"

[[layers]]
kind = "directory"
path = "/var/lib/svc"
owner = "10001:10001"
mode = "0750"

[[layers]]
kind = "python-packages"
packages = ["app"]
dest = "/opt/svc/lib"

[config]
user = "10001:10001"
entrypoint = ["/usr/bin/python3", "-m", "app"]
exposed_ports = ["8080/tcp"]

[config.env]
PYTHONPATH = "/opt/svc/lib"

[labels]
"org.opencontainers.image.version" = "${version}"
"org.opencontainers.image.revision" = "${revision}"
"literal" = "costs $$5"
"""


def _error(text: str) -> str:
    with pytest.raises(ImageSpecError) as info:
        parse_build_spec(text)
    return str(info.value)


# -- the repository's build.toml ----------------------------------------------------------


def test_the_repository_build_toml_is_valid_and_says_what_the_issue_asks() -> None:
    spec = load_build_spec(ROOT / "control_plane" / "build.toml")
    assert spec.config.user == "10001:10001"
    assert spec.config.entrypoint == ["/usr/bin/python3", "-m", "control_plane"]
    assert spec.config.exposed_ports == ["8080/tcp"]
    assert spec.config.env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert spec.config.env["CONTROL_PLANE_STATE_DIR"] == "/var/lib/control-plane"
    assert {"org.opencontainers.image.source", "org.opencontainers.image.revision",
            "org.opencontainers.image.version"} <= set(spec.labels)
    assert spec.user is not None and (spec.user.uid, spec.user.gid) == (10001, 10001)
    directories = [layer for layer in spec.layers if layer.kind == "directory"]
    assert [(d.path, d.owner) for d in directories] == [
        ("/var/lib/control-plane", "10001:10001")]


def test_a_valid_spec_parses_and_labels_render() -> None:
    spec = parse_build_spec(VALID)
    labels = render_labels(spec, {"version": "1.0.0", "revision": "abc", "source": "s",
                                  "created": "c"})
    assert labels == {"org.opencontainers.image.version": "1.0.0",
                      "org.opencontainers.image.revision": "abc", "literal": "costs $5"}


# -- one clear line per mistake -----------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('mode = "0750"', 'mode = "0779"', "layers.2.mode: '0779' is not an octal mode"),
        ('mode = "0750"', 'mode = "4755"', "setuid/setgid are not allowed"),
        ('owner = "10001:10001"', 'owner = "svc:svc"', "layers.2.owner: 'svc:svc' must be "
         "numeric 'uid:gid'"),
        ('path = "/var/lib/svc"', 'path = "var/lib/svc"', "layers.2.path: 'var/lib/svc' must "
         "be an absolute path"),
        ('path = "/var/lib/svc"', 'path = "/var/../svc"', "must be a normalised path"),
        ('kind = "accounts"', 'kind = "acounts"', "layers.0: Input tag 'acounts'"),
        ('"8080/tcp"', '"80800/tcp"', "config.exposed_ports.0: '80800/tcp' must be"),
        ('"8080/tcp"', '"8080"', "config.exposed_ports.0: '8080' must be 'PORT/tcp'"),
        ('PYTHONPATH = "/opt/svc/lib"', '"BAD-NAME" = "x"', "env: 'BAD-NAME' is not a "
         "variable name"),
        ('entrypoint = ["/usr/bin/python3"', 'entrypoint = ["python3"', "entrypoint: "
         "'python3' must be an absolute path"),
        ('entrypoint = ["/usr/bin/python3", "-m", "app"]', "entrypoint = []",
         "config.entrypoint: List should have at least 1 item"),
        ('user = "10001:10001"', 'user = "10002:10001"', "config.user '10002:10001' is not "
         "[user]'s '10001:10001'"),
        ('user = "10001:10001"', 'user = "control-plane"', "config.user: 'control-plane' must "
         "be numeric"),
        ('"${revision}"', '"${commit}"', "unknown placeholder ${commit}"),
        ('"${revision}"', '"$"', "malformed '$' placeholder"),
        ('requirements = "req.lock"', 'requirements = "/etc/req.lock"',
         "python.requirements: '/etc/req.lock' must be a path relative to the repository"),
        ('wheels = "wheels"', 'wheels = "../wheels"', "python.wheels: '../wheels' must be"),
        ('[python]', '[python]\nversion = "3"', "python.version: String should match"),
        ('uid = 10001', 'uid = 0', "user.uid: Input should be greater than or equal to 1"),
        ('name = "svc"', 'name = "Svc User"', "user.name: 'Svc User' is not a valid"),
        ('packages = ["app"]', 'packages = ["my-app"]', "layers.3.packages.0: String should "
         "match"),
        ('tag = "v1"', 'tag = "v1"\ntypo = 1', "base.typo: Extra inputs are not permitted"),
        ('[config]', '[config]\nstop_signal = "TERM"', "config.stop_signal: String should match"),
    ],
)
def test_each_mistake_is_named(old: str, new: str, expected: str) -> None:
    assert old in VALID
    message = _error(VALID.replace(old, new, 1))
    assert expected in message
    assert message.startswith("build.toml: ")
    assert "see publisher/image_spec.py" in message


def test_base_needs_exactly_one_source() -> None:
    layout_only = VALID.replace('repository = "test/base"\n', "")
    assert "base: give 'layout', 'repository' and 'tag'" in _error(layout_only)
    both = VALID.replace('tag = "v1"', 'tag = "v1"\nreference = "r.example/a/b@sha256:' +
                         "a" * 64 + '"')
    assert "give either 'reference' or 'layout'" in _error(both)


def test_a_registry_base_must_be_pinned_by_digest() -> None:
    base = '[base]\nreference = "registry.example.com/alga/debian:12"\n'
    text = base + VALID.split("[python]", 1)[1].join(["[python]", ""])
    assert "must be pinned by digest" in _error(text)
    pinned = base.replace(":12", ":12@sha256:" + "b" * 64)
    spec = parse_build_spec(pinned + "[python]" + VALID.split("[python]", 1)[1])
    assert spec.base.reference is not None


def test_layers_need_their_sections_and_appear_once() -> None:
    without_user = VALID.replace('[user]\nname = "svc"\nuid = 10001\ngid = 10001\n', "")
    assert "an 'accounts' layer needs a [user] section" in _error(without_user)
    without_python = VALID.replace('[python]\nrequirements = "req.lock"\nwheels = "wheels"\n',
                                   "")
    assert "a 'python-requirements' layer needs a [python] section" in _error(without_python)
    twice = VALID.replace('[[layers]]\nkind = "accounts"\n',
                          '[[layers]]\nkind = "accounts"\n\n[[layers]]\nkind = "accounts"\n')
    assert "at most one layer of kind 'accounts'" in _error(twice)


def test_several_mistakes_are_all_reported_and_bad_toml_is_named(tmp_path: Path) -> None:
    message = _error(VALID.replace('mode = "0750"', 'mode = "9"').replace('"8080/tcp"', '"x"'))
    assert "layers.2.mode" in message and "config.exposed_ports.0" in message
    assert "is not valid TOML" in _error("[base\n")
    with pytest.raises(ImageSpecError, match="does not exist"):
        load_build_spec(tmp_path / "build.toml")


# -- layers -------------------------------------------------------------------------------

USER = UserSection(name="svc", uid=10001, gid=10001, home="/var/lib/svc")
PASSWD = BaseFile(b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/x\n", 0o644, 0, 0)
GROUP = BaseFile(b"root:x:0:\nshadow:x:42:\n", 0o644, 0, 0)


def _members(layer_bytes: bytes, tmp_path: Path) -> dict[str, tarfile.TarInfo]:
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(layer_bytes)
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_accounts_are_appended_keeping_the_base_files_owner_and_mode(tmp_path: Path) -> None:
    group = BaseFile(GROUP.data, 0o640, 0, 42)
    layer = accounts_layer(USER, PASSWD, group, mtime=0)
    assert layer is not None
    members = _members(layer.compressed, tmp_path)
    assert set(members) == {"etc", "etc/group", "etc/passwd"}
    assert (members["etc/group"].mode, members["etc/group"].gid) == (0o640, 42)
    with tarfile.open(tmp_path / "layer.tar.gz") as tar:
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
    assert passwd.endswith("nobody:x:65534:65534::/:/x\n"
                           "svc:x:10001:10001::/var/lib/svc:/usr/sbin/nologin\n")


def test_no_accounts_layer_when_the_base_has_the_user() -> None:
    passwd = BaseFile(PASSWD.data + b"svc:x:10001:10001::/:/bin/false\n", 0o644, 0, 0)
    group = BaseFile(GROUP.data + b"svc:x:10001:\n", 0o644, 0, 0)
    assert accounts_layer(USER, passwd, group, mtime=0) is None


def test_account_conflicts_are_refused() -> None:
    taken = BaseFile(PASSWD.data + b"other:x:10001:10001::/:/x\n", 0o644, 0, 0)
    with pytest.raises(ImageLayerError, match="id 10001 is taken by 'other'"):
        accounts_layer(USER, taken, GROUP, mtime=0)
    other_id = BaseFile(PASSWD.data + b"svc:x:999:999::/:/x\n", 0o644, 0, 0)
    with pytest.raises(ImageLayerError, match="has 'svc' with id 999, not 10001"):
        accounts_layer(USER, other_id, GROUP, mtime=0)


def _app_tree(root: Path) -> None:
    (root / "app" / "sub").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "main.py").write_text("print('hi')\n")
    (root / "app" / "sub" / "__init__.py").write_text("")
    (root / "app" / "README.md").write_text("not shipped\n")
    (root / "app" / "__pycache__").mkdir()
    (root / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (root / "app" / "deploy").mkdir()
    (root / "app" / "deploy" / "x.py").write_text("")


def test_packages_layer_ignores_mtimes_modes_and_umask(tmp_path: Path) -> None:
    _app_tree(tmp_path)
    spec = PythonPackagesLayer(kind="python-packages", packages=["app"], dest="/opt/lib",
                               exclude=["app/deploy"])
    first = python_packages_layer(spec, tmp_path, mtime=0)
    for index, path in enumerate(sorted(tmp_path.rglob("*"))):
        if path.is_file():
            path.chmod(0o600)
        os.utime(path, (index * 1000, index * 1000))
    old = os.umask(0o077)
    try:
        second = python_packages_layer(spec, tmp_path, mtime=0)
    finally:
        os.umask(old)
    assert first == second
    members = _members(first.compressed, tmp_path)
    assert sorted(members) == ["opt", "opt/lib", "opt/lib/app", "opt/lib/app/__init__.py",
                               "opt/lib/app/main.py", "opt/lib/app/sub",
                               "opt/lib/app/sub/__init__.py"]
    assert {m.mode for m in members.values() if m.isfile()} == {0o644}
    assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 0)}


def test_a_missing_package_is_named(tmp_path: Path) -> None:
    spec = PythonPackagesLayer(kind="python-packages", packages=["nope"], dest="/opt/lib")
    with pytest.raises(ImageLayerError, match="package 'nope' not found"):
        python_packages_layer(spec, tmp_path, mtime=0)


# -- the builder on synthetic bases -------------------------------------------------------

APP_SPEC = """
[base]
layout = "base"
repository = "test/base"
tag = "TAG"

[user]
name = "svc"
uid = 10001
gid = 10001

[[layers]]
kind = "accounts"

[[layers]]
kind = "python-packages"
packages = ["app"]
dest = "/opt/svc/lib"
exclude = ["app/deploy"]

[config]
user = "10001:10001"
entrypoint = ["/usr/bin/python3", "-m", "app"]
exposed_ports = ["8080/tcp"]

[config.env]
PATH = "/usr/bin:/bin"
APP = "1"

[labels]
"org.opencontainers.image.version" = "${version}"
"""


def _base_image(layout: OCILayout, arch: str, layers: list[list[FileEntry]]) -> tuple[str, int]:
    """Push a base image (config + layers) for ``arch``; its manifest digest and size."""
    packed = [pack_entries_layer(entries, mtime=0) for entries in layers]
    config = canonical_json({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin", "LANG=C.UTF-8"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [p.diff_id for p in packed]},
        "history": [{"created_by": f"base layer {i}"} for i in range(len(packed))],
    })
    layout.push_blob("test/base", config)
    for p in packed:
        layout.push_blob("test/base", p.compressed, Digest.parse(p.digest))
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_IMAGE_CONFIG, "digest": str(Digest.of(config)),
                   "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": p.digest, "size": p.size}
                   for p in packed],
    })
    return str(layout.push_manifest("test/base", manifest, OCI_MANIFEST)), len(manifest)


ETC = [FileEntry("etc/passwd", data=PASSWD.data), FileEntry("etc/group", data=GROUP.data)]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A source tree with an app package and a base layout: tag ``single`` (amd64),
    ``multi`` (an index of amd64 and arm64; arm64's top layer deletes /etc/group)."""
    _app_tree(tmp_path)
    layout = OCILayout(tmp_path / "base", create=True)
    amd64 = _base_image(layout, "amd64", [ETC])
    arm64 = _base_image(layout, "arm64", [ETC, [FileEntry("etc/.wh.group", data=b"")]])
    layout.tag_manifest("test/base", Digest.parse(amd64[0]), "single")
    index = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d, "size": s,
             "platform": {"os": "linux", "architecture": a}}
            for (d, s), a in ((amd64, "amd64"), (arm64, "arm64"))
        ] + [{"mediaType": OCI_MANIFEST, "digest": amd64[0], "size": amd64[1],
              "platform": {"os": "unknown", "architecture": "unknown"}}],
    })
    layout.push_manifest("test/base", index, OCI_INDEX, tag="multi")
    return tmp_path


def _build(source: Path, tag: str, platforms: list[str] | None = None) -> BuiltImage:
    spec = parse_build_spec(APP_SPEC.replace("TAG", tag))
    return build_image(spec, source_root=source, version="2.0.0", revision="r", source="s",
                       epoch=0, platforms=platforms)


def test_single_platform_base_gives_a_manifest_with_our_config(source: Path) -> None:
    built = _build(source, "single")
    assert built.media_type == OCI_MANIFEST
    image = built.images[0]
    config = json.loads(image.config)
    assert config["config"]["User"] == "10001:10001"
    assert config["config"]["Entrypoint"] == ["/usr/bin/python3", "-m", "app"]
    assert "Cmd" not in config["config"]  # a new entrypoint resets the base's cmd
    assert config["config"]["Env"] == ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "APP=1"]
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert len(config["rootfs"]["diff_ids"]) == 3
    assert [h.get("empty_layer", False) for h in config["history"]] == [False] * 3 + [True]
    manifest = json.loads(image.manifest)
    assert manifest["annotations"]["org.opencontainers.image.base.digest"] == str(
        image.base.manifest_digest)
    assert manifest["annotations"]["org.opencontainers.image.version"] == "2.0.0"


def test_an_index_base_gives_an_index_with_one_manifest_per_platform(source: Path) -> None:
    built = _build(source, "multi")
    assert built.media_type == OCI_INDEX
    index = json.loads(built.data)
    assert [m["platform"] for m in index["manifests"]] == [
        {"os": "linux", "architecture": "amd64"}, {"os": "linux", "architecture": "arm64"}]
    amd64, arm64 = built.images
    assert json.loads(arm64.config)["architecture"] == "arm64"
    # The application layer does not depend on the platform; the accounts layers differ
    # because arm64's base deleted /etc/group (whiteout): a fresh one is written.
    assert amd64.layers[1].layer == arm64.layers[1].layer
    assert amd64.layers[0].layer != arm64.layers[0].layer

    only_arm = _build(source, "multi", platforms=["linux/arm64"])
    assert only_arm.media_type == OCI_MANIFEST
    assert only_arm.digest == arm64.digest


def test_missing_platforms_and_wrong_pins_are_refused(source: Path) -> None:
    with pytest.raises(BaseImageError, match=r"has no linux/s390x image \(it has: "
                       r"linux/amd64, linux/arm64\)"):
        _build(source, "multi", platforms=["linux/s390x"])
    with pytest.raises(BaseImageError, match="single-platform image for linux/amd64"):
        _build(source, "single", platforms=["linux/arm64"])
    spec = parse_build_spec(APP_SPEC.replace("TAG", "single").replace(
        'tag = "single"', 'tag = "single"\ndigest = "sha256:' + "0" * 64 + '"'))
    with pytest.raises(BaseImageError, match="not the pinned sha256:0000"):
        build_image(spec, source_root=source, version="1", revision="r", source="s", epoch=0)


def test_building_twice_is_identical_and_push_is_idempotent_and_immutable(
    source: Path, tmp_path: Path
) -> None:
    first, second = _build(source, "multi"), _build(source, "multi")
    assert first.data == second.data
    assert first.new_blobs() == second.new_blobs()

    target = OCILayout(tmp_path / "out", create=True)
    result = push_image(first, target, "alga/cp", "2.0.0")
    assert result.outcome == "pushed" and result.blobs_uploaded > 0
    assert target.resolve("alga/cp", "2.0.0").digest == first.digest
    again = push_image(second, target, "alga/cp", "2.0.0")
    assert again.outcome == "unchanged"

    (source / "app" / "main.py").write_text("print('changed')\n")
    changed = _build(source, "multi")
    with pytest.raises(ImmutableTagError, match="already exists as sha256:"):
        push_image(changed, target, "alga/cp", "2.0.0")
