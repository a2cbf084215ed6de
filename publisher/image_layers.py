"""The layers of an image build, one function per kind of ``[[layers]]`` entry.

Each returns an ``ocicore.tarpack.Layer`` (deterministic tar+gzip, its digest and diff
ID): the same inputs give the same bytes whatever the files' mtimes, the process umask
or the machine. Owners are root and modes 0644/0755 unless the build says otherwise.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ocicore.errors import ToolkitError
from ocicore.tarpack import FileEntry, Layer, pack_entries_layer, pack_tree_layer
from publisher.image_base import BaseFile
from publisher.image_spec import (
    DirectoryLayer,
    PythonPackagesLayer,
    PythonRequirementsLayer,
    PythonSection,
    UserSection,
    parse_owner,
)

#: OCI architecture → the machine name in wheel platform tags.
WHEEL_MACHINES = {"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "ppc64le": "ppc64le",
                  "s390x": "s390x"}
_PIP_TIMEOUT = 600


class ImageLayerError(ToolkitError):
    """A layer cannot be made from its inputs."""

    exit_code = 2


# -- accounts -----------------------------------------------------------------------------


def _entries(data: bytes) -> list[list[str]]:
    lines = data.decode("utf-8", errors="replace").splitlines()
    return [line.split(":") for line in lines if line and not line.startswith("#")]


def _with_account(
    base: BaseFile | None, what: str, name: str, ident: int, id_field: int, line: str
) -> BaseFile | None:
    """``base`` with ``line`` appended, ``None`` when it already holds the account.

    Raises ``ImageLayerError`` when the name or the id is taken by another account.
    """
    for fields in _entries(base.data if base else b""):
        if len(fields) <= id_field:
            continue
        if fields[0] == name:
            if fields[id_field] != str(ident):
                raise ImageLayerError(
                    f"the base's /etc/{what} has {name!r} with id {fields[id_field]}, not "
                    f"{ident}", hint="use the base's id in build.toml, or another base")
            return None
        if fields[id_field] == str(ident):
            raise ImageLayerError(
                f"id {ident} is taken by {fields[0]!r} in the base's /etc/{what}",
                hint=f"name the account {fields[0]!r} in build.toml, or choose another id")
    if base is None:
        root = ("root:x:0:0:root:/root:/usr/sbin/nologin\n" if what == "passwd"
                else "root:x:0:\n")
        return BaseFile((root + line).encode(), 0o644, 0, 0)
    data = base.data if base.data.endswith(b"\n") or not base.data else base.data + b"\n"
    return BaseFile(data + line.encode(), base.mode, base.uid, base.gid)


def accounts_layer(
    user: UserSection, passwd: BaseFile | None, group: BaseFile | None, *, mtime: int
) -> Layer | None:
    """``/etc/passwd`` and ``/etc/group`` of the base with the user and group added, or
    ``None`` when the base has both already. Owner and mode of the base's files are
    kept. Raises ``ImageLayerError`` when the name or id is taken by another account."""
    new_passwd = _with_account(
        passwd, "passwd", user.name, user.uid, 2,
        f"{user.name}:x:{user.uid}:{user.gid}:{user.gecos}:{user.home}:{user.shell}\n")
    new_group = _with_account(group, "group", user.group_name, user.gid, 2,
                              f"{user.group_name}:x:{user.gid}:\n")
    entries = [
        FileEntry(f"etc/{name}", data=file.data, mode=file.mode & 0o1777, uid=file.uid,
                  gid=file.gid)
        for name, file in (("group", new_group), ("passwd", new_passwd)) if file is not None
    ]
    return pack_entries_layer(entries, mtime=mtime) if entries else None


# -- directories --------------------------------------------------------------------------


def directory_layer(spec: DirectoryLayer, *, mtime: int) -> Layer:
    """An empty directory with the spec's owner and mode (parents 0755 root)."""
    uid, gid = parse_owner(spec.owner)
    entry = FileEntry(spec.path.lstrip("/"), is_dir=True, mode=int(spec.mode, 8), uid=uid,
                      gid=gid)
    return pack_entries_layer([entry], mtime=mtime)


# -- our packages -------------------------------------------------------------------------


def python_packages_layer(spec: PythonPackagesLayer, source_root: Path, *, mtime: int) -> Layer:
    """The spec's packages from the source tree under ``dest``: files whose name matches
    ``include``, minus ``exclude`` paths and byte-code caches; root-owned, 0644.

    Raises ``ImageLayerError`` when a package is missing or holds a symbolic link.
    """
    source = (source_root / spec.source).resolve()
    excluded = {os.path.normpath(p) for p in spec.exclude}
    dest = spec.dest.lstrip("/")
    entries: list[FileEntry] = []
    for package in spec.packages:
        top = source / package
        if not (top / "__init__.py").is_file():
            raise ImageLayerError(f"package {package!r} not found: {top}/__init__.py is missing",
                                  hint="check packages and source in build.toml")
        for dirpath, dirnames, filenames in os.walk(top):
            rel_dir = Path(dirpath).relative_to(source).as_posix()
            dirnames[:] = sorted(
                d for d in dirnames
                if d != "__pycache__" and f"{rel_dir}/{d}" not in excluded
            )
            for name in sorted(filenames):
                rel = f"{rel_dir}/{name}"
                path = Path(dirpath, name)
                if rel in excluded or not any(fnmatch.fnmatchcase(name, p) for p in spec.include):
                    continue
                if path.is_symlink() or not path.is_file():
                    raise ImageLayerError(f"{path} is not a regular file",
                                          hint="packages are copied as plain files")
                entries.append(FileEntry(f"{dest}/{rel}", data=path.read_bytes()))
    return pack_entries_layer(entries, mtime=mtime)


# -- third-party packages -----------------------------------------------------------------


def wheel_platform_tags(architecture: str, glibc: str) -> list[str]:
    """pip ``--platform`` values for a glibc system: every manylinux tag it accepts (pip
    does not expand them itself). Raises ``ImageLayerError`` for an unknown architecture."""
    machine = WHEEL_MACHINES.get(architecture)
    if machine is None:
        raise ImageLayerError(f"no wheel platform for architecture {architecture!r}",
                              hint=f"supported: {', '.join(sorted(WHEEL_MACHINES))}")
    newest = int(glibc.split(".")[1])
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(newest, 4, -1)]
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    return tags + [f"{name}_{machine}" for name, minor in legacy.items() if minor <= newest]


def python_requirements_layer(
    spec: PythonRequirementsLayer, python: PythonSection, source_root: Path, architecture: str,
    *, staging: Path, mtime: int,
) -> Layer:
    """``python.requirements`` installed for ``architecture`` from the local wheel
    directory (offline, hashes required), under ``dest``.

    What pip writes that depends on the build machine is removed: ``bin/`` (console
    scripts carry the builder's interpreter path in their ``#!`` line) and its
    ``RECORD`` lines, byte-code caches, ``direct_url.json``. Raises ``ImageLayerError``
    when pip fails (a wheel missing from the directory, a hash mismatch …).
    """
    requirements = source_root / python.requirements
    wheels = source_root / python.wheels
    if not requirements.is_file():
        raise ImageLayerError(f"{requirements} does not exist", hint="check [python] in build.toml")
    if not wheels.is_dir():
        raise ImageLayerError(f"the wheel directory {wheels} does not exist",
                              hint="run ./scripts/setup.sh (it downloads the wheels once)")
    abi = "cp" + python.version.replace(".", "")
    command = [
        sys.executable, "-m", "pip", "install", "--isolated", "--quiet", "--no-input",
        "--disable-pip-version-check", "--no-cache-dir", "--target", str(staging),
        "--no-index", "--find-links", str(wheels), "--only-binary=:all:", "--no-compile",
        "--require-hashes", "--python-version", python.version, "--implementation", "cp",
        "--abi", abi, "-r", str(requirements),
    ]
    for tag in wheel_platform_tags(architecture, python.glibc):
        command += ["--platform", tag]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False,
                            timeout=_PIP_TIMEOUT)
    if result.returncode != 0:
        detail = " | ".join(line for line in result.stderr.strip().splitlines()
                            if line.startswith("ERROR"))[-600:]
        raise ImageLayerError(
            f"installing {python.requirements} for linux/{architecture} failed: "
            f"{detail or result.stderr.strip()[-300:]}",
            hint=f"download the wheels for it into {python.wheels} (./scripts/setup.sh does "
            "for this machine's architecture)")
    _normalise_site(staging)
    return pack_tree_layer(staging, prefix=spec.dest.lstrip("/"), mtime=mtime)


def _normalise_site(site: Path) -> None:
    shutil.rmtree(site / "bin", ignore_errors=True)
    for cache in sorted(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    for path in site.rglob("*.dist-info/direct_url.json"):
        path.unlink()
    for record in site.glob("*.dist-info/RECORD"):
        lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith("../")
                and "__pycache__" not in line.split(",")[0] and "direct_url.json" not in line]
        if kept != lines:
            record.write_text("".join(kept), encoding="utf-8")

