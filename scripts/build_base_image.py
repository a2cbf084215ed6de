#!/usr/bin/env python3
"""Build the offline base image for the control-plane image, once, and cache it.

    .venv/bin/python scripts/build_base_image.py .tools/base-image [--wheels .tools/wheels]

What it makes: an OCI image layout at the given path, tagged ``bookworm-python3``, holding
one image for this machine's architecture: a Debian 12 (bookworm) ``minbase`` root
filesystem with ``python3`` (CPython 3.11), made by ``debootstrap`` from the Debian
package registry, packed as ONE deterministic layer with ``ocicore.tarpack``. The
manifest digest is written to ``<layout>/DIGEST`` and the build inputs to
``<layout>/INPUTS.json``; a later run with the same inputs does nothing (the setup
script calls this on every run). With ``--wheels DIR`` it also downloads, once, the
wheels pinned by ``control_plane/requirements.lock`` for this architecture, so that
image builds run offline (``DIR/.lock-sha256`` records which lock they match).

How the root filesystem is changed on its way into the layer, and why:

- Shrunk: apt caches and lists, documentation (the ``copyright`` files stay), man and
  info pages, locales, logs, ``*-old`` backups. It is a base for one Python service,
  not a system to administer: nothing in it runs apt.
- Python's byte-code caches are regenerated inside the root (``chroot … compileall``)
  as *unchecked-hash* pycs (PEP 552): the packer fixes every mtime, which would make
  Debian's timestamp-based pycs stale, so every start would compile the standard
  library again.
- Device nodes (``/dev/null`` …) are left out: the container runtime provides
  ``/dev``. The ``/dev`` directory itself stays.
- Symbolic links are rewritten, when needed, into the equivalent relative link that
  does not pass through another link (``/etc/alternatives/awk`` →
  ``../../etc/alternatives/awk``; ``/bin/sh`` → ``../usr/bin/sh``): resolved inside the
  image root they point at exactly the same file, and the packer accepts only links
  that stay inside the tree.
- Owners and permission bits are kept as they are (``/etc/shadow`` root:shadow 0640,
  ``/tmp`` 1777, …), except setuid/setgid bits, which are dropped (``su``, ``passwd``,
  ``mount`` …): the service runs as UID 10001 with no privilege escalation, and a
  deterministic packer refuses to write them. Hard links become separate files.

Two runs against the same Debian package set gave the same digest; when Debian publishes
new package versions the digest changes, which is why the image is built once and cached:
the control-plane image built on top of it is deterministic given this base's digest. The
package list is in ``<layout>/PACKAGES``.

Needs root (debootstrap, and reading the root filesystem with its real owners) and the
``debootstrap`` package; both failures say so in one line (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import posixpath
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from ocicore.digest import Digest
from ocicore.jsonutil import canonical_json
from ocicore.layout import OCILayout
from ocicore.models import OCI_IMAGE_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from ocicore.tarpack import pack_tree_into, source_date_epoch, symlink_target_problem

ROOT = Path(__file__).resolve().parent.parent
RECIPE_VERSION = 1  # bump when the steps below change what goes into the image
SUITE = "bookworm"
VARIANT = "minbase"
INCLUDE = ("python3",)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TAG = "bookworm-python3"
REPOSITORY = "base/debian-python3"  # a layout has no repositories; recorded for readers
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PYTHON_VERSION = "3.11"
LOCK = ROOT / "control_plane" / "requirements.lock"

_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
                  "s390x": "s390x"}
# Removed from the root (paths relative to it); directories keep existing, emptied.
_EMPTIED_DIRS = ("var/cache/apt", "var/lib/apt/lists", "var/log", "usr/share/man",
                 "usr/share/info", "usr/share/locale", "usr/share/lintian", "tmp",
                 "var/cache/ldconfig")
_REMOVED_FILES = ("etc/machine-id", "var/lib/dbus/machine-id", "etc/hostname",
                  "etc/resolv.conf")
_MAX_LINK_HOPS = 40


class BaseImageError(Exception):
    """A one-line failure of this script (printed without a traceback)."""


def log(message: str) -> None:
    sys.stderr.write(f"[base-image] {message}\n")
    sys.stderr.flush()


def oci_architecture() -> str:
    machine = platform.machine()
    try:
        return _ARCHITECTURES[machine]
    except KeyError:
        raise BaseImageError(f"unsupported machine architecture {machine!r}") from None


def wanted_inputs(mirror: str) -> dict[str, object]:
    return {
        "recipe": RECIPE_VERSION,
        "suite": SUITE,
        "variant": VARIANT,
        "include": list(INCLUDE),
        "mirror": mirror,
        "architecture": oci_architecture(),
        "sourceDateEpoch": source_date_epoch(),
    }


def layout_is_current(layout: Path, inputs: dict[str, object]) -> bool:
    """Whether ``layout`` holds the tagged image built from ``inputs``, intact."""
    try:
        recorded = json.loads((layout / "INPUTS.json").read_text())
        digest = Digest.parse((layout / "DIGEST").read_text().strip())
        store = OCILayout(layout)
        if recorded != inputs or store.resolve(REPOSITORY, TAG).digest != digest:
            return False
        manifest = json.loads(store.get_manifest(REPOSITORY, digest).data)
        blobs = [manifest["config"], *manifest["layers"]]
        return all(
            store.blob_path(Digest.parse(b["digest"])).stat().st_size == b["size"] for b in blobs
        )
    except Exception:  # any doubt (missing, malformed, corrupted): rebuild
        return False


# -- the root filesystem ------------------------------------------------------------------


def debootstrap(rootfs: Path, mirror: str) -> None:
    tool = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").is_file() else None
    )
    if tool is None:
        raise BaseImageError(
            "debootstrap is not installed; run ./scripts/setup.sh (or: apt-get install "
            "debootstrap)"
        )
    command = [tool, f"--variant={VARIANT}", f"--include={','.join(INCLUDE)}", SUITE,
               str(rootfs), mirror]
    log(f"running {' '.join(command)}")
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise BaseImageError(f"debootstrap failed (exit {result.returncode}): {tail}")
    log(f"debootstrap done in {time.monotonic() - started:.0f} s")


def shrink(rootfs: Path) -> None:
    for rel in _EMPTIED_DIRS:
        directory = rootfs / rel
        if directory.is_dir() and not directory.is_symlink():
            for child in directory.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for rel in _REMOVED_FILES:
        with contextlib.suppress(FileNotFoundError):
            (rootfs / rel).unlink()
    doc = rootfs / "usr/share/doc"
    if doc.is_dir():
        for path in sorted(doc.rglob("*"), reverse=True):
            if path.is_symlink() or path.is_file():
                if path.name != "copyright":
                    path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    for path in rootfs.joinpath("var").rglob("*-old"):
        if path.is_file() and not path.is_symlink():
            path.unlink()
    (rootfs / "etc/hostname").write_text("localhost\n")


def recompile_python(rootfs: Path) -> None:
    """Replace Debian's timestamp pycs by unchecked-hash ones, compiled by the image's own
    interpreter (PYTHONHASHSEED=0: set constants come out in one order)."""
    for cache in list(rootfs.joinpath("usr/lib").rglob("__pycache__")):
        if cache.is_dir() and not cache.is_symlink():
            shutil.rmtree(cache)
    dirs = [f"/usr/lib/python{PYTHON_VERSION}", "/usr/lib/python3/dist-packages"]
    command = ["chroot", str(rootfs), "/usr/bin/python3", "-m", "compileall", "-q", "-j0",
               "--invalidation-mode", "unchecked-hash", *dirs]
    env = {"PATH": PATH_ENV.removeprefix("PATH="), "PYTHONHASHSEED": "0", "LC_ALL": "C"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    # compileall exits 1 when some file does not compile (e.g. lib2to3 test data); the
    # rest is compiled, which is all that matters here.
    if result.returncode not in (0, 1):
        raise BaseImageError(f"compileall in the root failed: {result.stderr.strip()[-300:]}")


def package_list(rootfs: Path) -> str:
    result = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W", "-f",
         "${Package} ${Version} ${Architecture}\n"],
        capture_output=True, text=True, check=True,
    )
    return "".join(sorted(result.stdout.splitlines(keepends=True)))


def _resolve_in_root(rootfs: Path, parts: list[str]) -> list[str]:
    """The canonical path (components) of ``parts`` resolved inside ``rootfs`` as if it
    were ``/``: every link followed, ``..`` never above the root."""
    resolved: list[str] = []
    pending = list(parts)
    hops = 0
    while pending:
        component = pending.pop(0)
        if component in ("", "."):
            continue
        if component == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = [*resolved, component]
        path = rootfs.joinpath(*candidate)
        if path.is_symlink():
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise BaseImageError(f"symbolic link loop at /{'/'.join(candidate)}")
            target = os.readlink(path)
            if target.startswith("/"):
                resolved = []
            pending = target.split("/") + pending
            continue
        resolved = candidate
    return resolved


def _symlinks(rootfs: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            if path.is_symlink():
                yield path.relative_to(rootfs).as_posix()


def normalise_symlinks(rootfs: Path) -> int:
    """Rewrite links that the packer would refuse (absolute, or through another link)
    into the equivalent direct relative link; returns how many were rewritten."""
    links = sorted(_symlinks(rootfs))
    link_set = set(links)
    rewritten = 0
    for link in links:
        target = os.readlink(rootfs / link)
        if not symlink_target_problem(link, target, link_set):
            continue
        link_dir = link.split("/")[:-1]
        full = target.split("/") if target.startswith("/") else [*link_dir, *target.split("/")]
        last = full[-1] if full else ""
        if last in ("", ".", ".."):
            canonical = _resolve_in_root(rootfs, full)
        else:
            canonical = [*_resolve_in_root(rootfs, full[:-1]), last]
        new = posixpath.relpath("/".join(canonical) or ".", "/".join(link_dir) or ".")
        problem = symlink_target_problem(link, new, link_set)
        if problem:
            raise BaseImageError(f"cannot make /{link} -> {target} a relative link: {problem}")
        os.unlink(rootfs / link)
        os.symlink(new, rootfs / link)
        rewritten += 1
    return rewritten


# -- packing ------------------------------------------------------------------------------


def pack_rootfs(rootfs: Path, layout_dir: Path, mtime: int, inputs: dict[str, object]) -> Digest:
    """Pack ``rootfs`` as one layer into a new layout at ``layout_dir``; the manifest digest."""

    def lstat(rel: str) -> os.stat_result:
        return os.lstat(rootfs / rel)

    def is_special(rel: str) -> bool:
        mode = lstat(rel).st_mode
        return not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode))

    def owner(rel: str) -> tuple[int, int]:
        st = lstat(rel)
        return st.st_uid, st.st_gid

    def mode(rel: str) -> int | None:
        st = lstat(rel)
        return None if stat.S_ISLNK(st.st_mode) else st.st_mode & 0o1777

    store = OCILayout(layout_dir, create=True)
    layer_file = layout_dir.parent / "rootfs.tar.gz"
    started = time.monotonic()
    with layer_file.open("wb") as out:
        digests = pack_tree_into(
            out, rootfs, exclude=is_special, mtime=mtime, allow_symlinks=True,
            owner_overrides=owner, mode_overrides=mode,
        )
    log(f"packed the root filesystem: {digests.size / 1e6:.1f} MB compressed in "
        f"{time.monotonic() - started:.0f} s")
    store.push_blob(REPOSITORY, layer_file, Digest.parse(digests.digest))
    layer_file.unlink()
    created = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    created_by = (f"debootstrap --variant={VARIANT} --include={','.join(INCLUDE)} {SUITE} "
                  f"{inputs['mirror']}; shrunk, pycs as unchecked-hash "
                  f"(scripts/build_base_image.py recipe {RECIPE_VERSION})")
    config = canonical_json({
        "architecture": inputs["architecture"],
        "os": "linux",
        "created": created,
        "config": {
            "Env": [PATH_ENV, "LANG=C.UTF-8"],
            "Cmd": ["/usr/bin/python3"],
            "Labels": {
                "org.opencontainers.image.title": "debian-bookworm-python3",
                "org.opencontainers.image.description":
                    "Debian 12 minbase with python3, for the appliance control plane",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [digests.diff_id]},
        "history": [{"created": created, "created_by": created_by}],
    })
    store.push_blob(REPOSITORY, config, Digest.of(config))
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_IMAGE_CONFIG, "digest": str(Digest.of(config)),
                   "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digests.digest,
                    "size": digests.size}],
        "annotations": {"org.opencontainers.image.created": created},
    })
    return store.push_manifest(REPOSITORY, manifest, OCI_MANIFEST, tag=TAG)


def build(layout: Path, mirror: str, inputs: dict[str, object]) -> Digest:
    layout.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".base-image-", dir=layout.parent) as work:
        rootfs = Path(work, "rootfs")
        debootstrap(rootfs, mirror)
        shrink(rootfs)
        recompile_python(rootfs)
        log(f"rewrote {normalise_symlinks(rootfs)} symbolic links as direct relative links")
        packages = package_list(rootfs)
        staged = Path(work, "layout")
        digest = pack_rootfs(rootfs, staged, int(str(inputs["sourceDateEpoch"])), inputs)
        (staged / "PACKAGES").write_text(packages)
        (staged / "DIGEST").write_text(f"{digest}\n")
        (staged / "INPUTS.json").write_text(json.dumps(inputs, indent=2, sort_keys=True) + "\n")
        if layout.exists():
            shutil.rmtree(layout)
        os.replace(staged, layout)
    return digest


# -- wheels for offline image builds -----------------------------------------------------


def manylinux_platforms(arch: str, glibc_minor: int = 36) -> list[str]:
    """pip ``--platform`` values for a glibc 2.<minor> system (pip does not expand them)."""
    machine = {v: k for k, v in _ARCHITECTURES.items()}.get(arch, arch)
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc_minor, 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def download_wheels(wheels: Path, lock: Path) -> None:
    want = hashlib.sha256(lock.read_bytes()).hexdigest() + f" {oci_architecture()}"
    stamp = wheels / ".lock-sha256"
    if stamp.is_file() and stamp.read_text().strip() == want:
        return
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation",
               "cp", "--abi", f"cp{PYTHON_VERSION.replace('.', '')}", "-d", str(wheels),
               "-r", str(lock)]
    for tag in manylinux_platforms(oci_architecture()):
        command += ["--platform", tag]
    log(f"downloading the wheels pinned in {lock.relative_to(ROOT)} into {wheels}")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise BaseImageError(f"pip download failed: {tail}")
    stamp.write_text(want + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("layout", type=Path, help="the OCI layout to write, e.g. .tools/base-image")
    parser.add_argument("--mirror", default=os.environ.get("DEBIAN_MIRROR", DEFAULT_MIRROR))
    parser.add_argument("--wheels", type=Path, help="also download the lock's wheels here")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    try:
        if args.wheels is not None:
            download_wheels(args.wheels, LOCK)
        inputs = wanted_inputs(args.mirror)
        if not args.force and layout_is_current(args.layout, inputs):
            return 0
        if os.geteuid() != 0:
            raise BaseImageError(
                "building the base image needs root (debootstrap, and the root "
                "filesystem's real owners); run: sudo ./scripts/setup.sh"
            )
        started = time.monotonic()
        digest = build(args.layout, args.mirror, inputs)
        log(f"{args.layout}:{TAG} is {digest} (built in {time.monotonic() - started:.0f} s)")
    except BaseImageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
