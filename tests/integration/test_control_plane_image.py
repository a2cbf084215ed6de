"""The control-plane image, built without a daemon on the offline base image.

- Packing twice, with the source files' mtimes, modes and the process umask changed in
  between, gives byte-identical blobs and the same manifest digest.
- Pushed to a real registry; a second push of the same image uploads zero blob bytes
  (counted by our client).
- skopeo sees User 10001:10001, our entrypoint, port and labels; umoci unpacks a root in
  which our files are root-owned and the state directory belongs to 10001; the unpacked
  image runs its entrypoint as 10001 (chroot) and answers its health endpoints.

Needs the base image layout from ./scripts/setup.sh (.tools/base-image) and the wheels
(.tools/wheels); fails, never skips, without them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ocicore.client import RegistryClient
from ocicore.copy import copy
from ocicore.layout import OCILayout
from ocicore.models import OCI_MANIFEST
from publisher.image_build import BuiltImage, build_image, push_image
from publisher.image_spec import BaseSection, ImageBuildSpec, load_build_spec
from tests.registry import RegistryInstance, free_port
from tests.tools import ROOT, require_tool

pytestmark = pytest.mark.integration

BASE_LAYOUT = ROOT / ".tools" / "base-image"
WHEELS = ROOT / ".tools" / "wheels"
PACKAGES = ("ocicore", "consumer", "control_plane")
INPUTS = {"version": "1.4.2", "revision": "0123456789abcdef0123456789abcdef01234567",
          "source": "https://git.example.invalid/alga/appliance"}


@pytest.fixture(scope="module")
def spec() -> ImageBuildSpec:
    if not (BASE_LAYOUT / "oci-layout").is_file():
        pytest.fail(f"the base image layout {BASE_LAYOUT} is missing: run ./scripts/setup.sh",
                    pytrace=False)
    if not WHEELS.is_dir():
        pytest.fail(f"the wheel directory {WHEELS} is missing: run ./scripts/setup.sh",
                    pytrace=False)
    return load_build_spec(ROOT / "control_plane" / "build.toml")


def _source_tree(dest: Path) -> Path:
    """A copy of what the build reads: our packages, the lock, and the tools directory."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / ".tools").symlink_to(ROOT / ".tools")
    return dest


def _build(spec: ImageBuildSpec, source_root: Path) -> BuiltImage:
    return build_image(spec, source_root=source_root, epoch=1_700_000_000,
                       version=INPUTS["version"], revision=INPUTS["revision"],
                       source=INPUTS["source"])


@pytest.fixture(scope="module")
def built(spec: ImageBuildSpec, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return _build(spec, _source_tree(tmp_path_factory.mktemp("source")))


def test_packing_twice_gives_identical_bytes(
    spec: ImageBuildSpec, built: BuiltImage, tmp_path: Path
) -> None:
    source = _source_tree(tmp_path / "source")
    for index, path in enumerate(sorted(p for p in source.rglob("*") if not p.is_symlink())):
        os.utime(path, (1_000_000 + index * 7919, 2_000_000_000 - index * 104729))
        if path.is_file():
            path.chmod(0o600)
    old_umask = os.umask(0o077)
    try:
        again = _build(spec, source)
    finally:
        os.umask(old_umask)

    assert again.digest == built.digest
    assert again.data == built.data
    assert again.new_blobs() == built.new_blobs()
    assert [i.config for i in again.images] == [i.config for i in built.images]
    assert built.media_type == OCI_MANIFEST
    kinds = [a.kind for a in built.images[0].layers]
    assert kinds == ["accounts", "python-requirements", "directory", "python-packages"]


def test_a_changed_source_file_changes_only_the_application_layer(
    spec: ImageBuildSpec, built: BuiltImage, tmp_path: Path
) -> None:
    source = _source_tree(tmp_path / "source")
    with (source / "control_plane" / "service.py").open("a") as fh:
        fh.write("\n# changed\n")
    changed = _build(spec, source)
    before = {a.kind: a.layer.digest for a in built.images[0].layers}
    after = {a.kind: a.layer.digest for a in changed.images[0].layers}
    assert changed.digest != built.digest
    assert {k for k in before if before[k] != after[k]} == {"python-packages"}


def _client(registry: RegistryInstance) -> RegistryClient:
    return RegistryClient(registry.host, credentials=None)


def test_second_push_uploads_zero_bytes(built: BuiltImage, registry: RegistryInstance) -> None:
    repository = f"alga/control-plane-{uuid.uuid4().hex[:8]}"
    with _client(registry) as client:
        first = push_image(built, client, repository, INPUTS["version"])
        assert first.outcome == "pushed"
        assert first.digest == built.digest
        uploaded = client.stats.bytes_uploaded
        assert uploaded == first.bytes_uploaded > 40_000_000  # the base layer went up once

        again = push_image(built, client, repository, INPUTS["version"])
        assert again.outcome == "unchanged"
        # Under another tag, every blob is checked and skipped: still nothing uploaded.
        other = push_image(built, client, repository, "rerun")
        assert other.outcome == "pushed"
        assert other.blobs_uploaded == 0 and other.bytes_uploaded == 0
        assert client.stats.bytes_uploaded == uploaded
        assert client.resolve(repository, "rerun").digest == built.digest


@pytest.fixture(scope="module")
def pushed(built: BuiltImage, registry: RegistryInstance) -> str:
    repository = f"alga/appliance-control-plane-{uuid.uuid4().hex[:8]}"
    with _client(registry) as client:
        push_image(built, client, repository, INPUTS["version"])
    return f"{registry.host}/{repository}:{INPUTS['version']}"


def _skopeo(*args: str) -> dict[str, object]:
    result = subprocess.run([require_tool("skopeo"), *args], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def test_skopeo_sees_user_entrypoint_port_and_labels(built: BuiltImage, pushed: str) -> None:
    inspect = _skopeo("inspect", "--tls-verify=false", f"docker://{pushed}")
    assert inspect["Digest"] == str(built.digest)
    assert inspect["Architecture"] == built.images[0].base.platform.architecture
    labels = inspect["Labels"]
    assert isinstance(labels, dict)
    assert labels["org.opencontainers.image.version"] == INPUTS["version"]
    assert labels["org.opencontainers.image.revision"] == INPUTS["revision"]
    assert labels["org.opencontainers.image.source"] == INPUTS["source"]
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"

    config = _skopeo("inspect", "--config", "--tls-verify=false", f"docker://{pushed}")
    container = config["config"]
    assert isinstance(container, dict)
    assert container["User"] == "10001:10001"
    assert container["Entrypoint"] == ["/usr/bin/python3", "-m", "control_plane"]
    assert container["ExposedPorts"] == {"8080/tcp": {}}
    assert "CONTROL_PLANE_STATE_DIR=/var/lib/control-plane" in container["Env"]
    assert config["created"] == "2023-11-14T22:13:20Z"


@pytest.fixture(scope="module")
def rootfs(pushed: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pushed image, copied to an OCI layout by skopeo and unpacked by umoci."""
    if os.geteuid() != 0:
        pytest.fail("unpacking with the image's owners and running chroot need root; run the "
                    "integration tests as root (as in CI)", pytrace=False)
    work = tmp_path_factory.mktemp("unpack")
    layout, bundle = work / "layout", work / "bundle"
    subprocess.run([require_tool("skopeo"), "copy", "--src-tls-verify=false",
                    f"docker://{pushed}", f"oci:{layout}:image"],
                   check=True, capture_output=True, timeout=300)
    result = subprocess.run([require_tool("umoci"), "unpack", "--image", f"{layout}:image",
                             str(bundle)], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    OCILayout(layout)  # what skopeo wrote is a layout we read, too
    return bundle / "rootfs"


def test_umoci_rootfs_has_our_files_and_owners(rootfs: Path) -> None:
    state = (rootfs / "var/lib/control-plane").lstat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o7777) == (10001, 10001, 0o750)

    service = rootfs / "opt/control-plane/lib/control_plane/service.py"
    st = service.lstat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o644)
    assert service.read_bytes() == (ROOT / "control_plane/service.py").read_bytes()
    assert not (rootfs / "opt/control-plane/lib/control_plane/deploy").exists()
    assert not list((rootfs / "opt/control-plane/lib").rglob("__pycache__"))
    assert (rootfs / "opt/control-plane/site-packages/pydantic/__init__.py").is_file()
    assert not (rootfs / "opt/control-plane/site-packages/bin").exists()

    passwd = (rootfs / "etc/passwd").read_text().splitlines()
    assert passwd[-1].startswith("control-plane:x:10001:10001:")
    assert passwd[0].startswith("root:x:0:0:")  # the base's entries are kept
    assert "control-plane:x:10001:" in (rootfs / "etc/group").read_text().splitlines()
    shadow = (rootfs / "etc/shadow").lstat()
    assert (shadow.st_gid, shadow.st_mode & 0o777) != (0, 0o644)  # base owners kept
    devices = [p for p in (rootfs / "dev").rglob("*")
               if stat.S_ISCHR(p.lstat().st_mode) or stat.S_ISBLK(p.lstat().st_mode)]
    assert devices == []  # the runtime provides them


@pytest.fixture
def running(built: BuiltImage, rootfs: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The image's entrypoint, run as its user in the unpacked root, with its env."""
    config = json.loads(built.images[0].config)["config"]
    port = free_port()
    env = dict(item.split("=", 1) for item in config["Env"])
    env.update(CONTROL_PLANE_PORT=str(port), CONTROL_PLANE_BIND="127.0.0.1")
    command = [require_tool("chroot"), f"--userspec={config['User']}", str(rootfs),
               *config["Entrypoint"]]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_unpacked_image_runs_its_entrypoint_and_answers_health(
    running: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = running
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            response = httpx.get(f"{url}/healthz", timeout=2)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the service did not start listening in 30 s"
            time.sleep(0.1)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}  # 10001 owns the state
    status = httpx.get(f"{url}/status")
    assert status.status_code == 200
    assert status.json()["channels"] == {}
    update = httpx.post(f"{url}/update")
    assert update.status_code == 404  # no registry configured in this run
    assert "not configured" in update.json()["error"]

    process.terminate()
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events if e["event"] in ("listening", "stopped")] == [
        "listening", "stopped"]
    assert any(e.get("path") == "/healthz" and e.get("status") == 200 for e in events)


def test_a_registry_base_is_read_by_digest_and_its_layers_mounted(
    spec: ImageBuildSpec, built: BuiltImage, registry: RegistryInstance, tmp_path: Path
) -> None:
    """The base pinned by digest in a registry (``reference`` in build.toml): the build
    reads it there, and the push mounts its layers from the base repository."""
    base_repo = f"base/debian-python3-{uuid.uuid4().hex[:8]}"
    target_repo = f"alga/appliance-control-plane-{uuid.uuid4().hex[:8]}"
    base_digest = built.images[0].base.manifest_digest
    with _client(registry) as client:
        copy(OCILayout(BASE_LAYOUT), "base/debian-python3", base_digest, client, base_repo)
        from_registry = spec.model_copy(update={"base": BaseSection(
            reference=f"{registry.host}/{base_repo}@{base_digest}")})
        rebuilt = build_image(from_registry, base_store=client, source_root=ROOT,
                              epoch=1_700_000_000, version=INPUTS["version"],
                              revision=INPUTS["revision"], source=INPUTS["source"])
        # Same layers and config as the layout build; only the base's name differs.
        assert rebuilt.new_blobs() == built.new_blobs()
        annotations = json.loads(rebuilt.data)["annotations"]
        assert annotations["org.opencontainers.image.base.name"].startswith(registry.host)

        before = client.stats.bytes_uploaded
        result = push_image(rebuilt, client, target_repo, INPUTS["version"])
        base_layers = built.images[0].base.manifest.layers
        assert result.blobs_mounted >= len(base_layers)
        new_bytes = sum(len(b) for b in built.new_blobs().values())
        assert client.stats.bytes_uploaded - before == result.bytes_uploaded == new_bytes


def test_every_module_of_our_packages_imports_inside_the_image(
    built: BuiltImage, rootfs: Path
) -> None:
    """The lock covers what our packages import (a new dependency fails here until it
    is pinned in control_plane/requirements.lock)."""
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES for path in (ROOT / package).rglob("*.py")
        if "deploy" not in path.parts and path.name != "__main__.py"
    )
    config = json.loads(built.images[0].config)["config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)"
    result = subprocess.run(
        [require_tool("chroot"), f"--userspec={config['User']}", str(rootfs),
         "/usr/bin/python3", "-c", script, *modules],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
