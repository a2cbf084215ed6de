"""The appliance ISO: stage the host overlay, the nocloud seed and the baked control-plane
image, and remaster a base ISO with xorriso into ``<name>-<version>.iso`` + ``.sha256``.

Three steps, each usable on its own (the inputs and the seed they render are in
``publisher.iso_inputs``):

1. ``export_image_archive(store, repo, reference, dest_tar)``: copy the control-plane
   image (from a ``RegistryClient`` or an ``OCILayout``) into a fresh OCI layout and
   write it as an OCI archive tar for ``k3s ctr -n k8s.io images import``.
2. ``stage_overlay(inputs, overlay_src, image_archive, staging_dir)``: lay out what goes
   on the ISO in ``staging_dir`` (``appliance/overlay``, ``appliance/images``,
   ``nocloud``), from the validated ``IsoInputs``.
3. ``remaster(base_iso, staging_dir, dest_dir, name, version)``: add the staged tree to
   the base ISO, keeping its boot setup, and write the ISO and its checksum file.

The ISO as written::

    /appliance/overlay/...                   the host overlay, copied onto / at first boot
        etc/systemd/system/appliance-bootstrap.{service,timer}
        etc/appliance/bootstrap.env          REGISTRY, CHANNEL, TRUST_FILE, STATE_DIR
        etc/appliance/trust.pem              the release signing public keys
        usr/local/lib/appliance/bootstrap.sh
    /appliance/images/control-plane.oci.tar  the baked baseline control-plane image
    /nocloud/user-data, /nocloud/meta-data   the cloud-init NoCloud seed
    (everything of the base ISO, unchanged, with its El Torito and system area)

The seed's ``runcmd`` mounts the ISO by its volume id, copies the overlay onto ``/``
and the image archive to ``/usr/local/lib/appliance/images/``, and enables the
bootstrap timer. cloud-init finds the seed with ``ds=nocloud;s=file:///cdrom/nocloud/``
on the kernel command line (the base's boot menu is left as it is).

Image names in the archive. ``ctr images import`` names an image after the
``org.opencontainers.image.ref.name`` annotation of its ``index.json`` entry; a value
containing ``/``, ``:`` or ``@`` is taken as is, while a bare tag becomes
``import-<date>:<tag>``. So the entries carry full references: ``registry/repo:tag``
(the tag exported) and ``registry/repo@sha256:<digest>``. The second lets the CRI find
the image offline for a Deployment pinned by digest, as the control plane's is (the
CRI resolves ``repo@sha256:…`` through an image record of exactly that name). An
export by digest has only the second entry. ``skopeo`` reads the archive as
``oci-archive:<tar>:<either name>`` (without a name only when there is one entry).

Reproducibility. Two runs with the same base ISO, staged tree and xorriso version give
byte-identical ISOs (tested, with the runs in different clock seconds and staged files
of different mtimes): startup files are skipped (``-no_rc``); added files get uid/gid 0
and all timestamps ``SOURCE_DATE_EPOCH`` (default 0), whatever their mtimes on disk;
the volume UUID (``-volume_date uuid``: creation and modification time, GRUB's
``--fs-uuid``, the boot catalog's time) is the base's modification time, which
``-boot_image any replay`` re-applies anyway, so base boot menus that search by it keep
working (``SOURCE_DATE_EPOCH`` when the base has none); GPT GUIDs derive from it
(``gpt_disk_guid=volume_date_uuid``, else they are random); ``-iso_nowtime`` is fixed
and ``SOURCE_DATE_EPOCH`` is exported to xorriso. xorriso writes its own version into
the preparer id, so another xorriso version gives other bytes. The volume id is set
(default ``<NAME>_<VERSION>``); a base whose boot menu finds its root by volume label
needs ``volume_id`` set to that label.

Errors are one-liners with a hint: ``BaseIsoError`` (missing, not ISO 9660, already
remastered), ``StagingError`` (incomplete or unexpected staging tree),
``DestinationExistsError`` (refused unless ``overwrite=True``), ``IsoInputError``
(invalid inputs), ``consumer.tools.ToolMissingError`` (xorriso not installed) and
``consumer.tools.ToolFailedError`` (xorriso failed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from consumer.tools import ToolFailedError, ToolMissingError, find_tool
from ocicore.config import ClientConfig
from ocicore.copy import copy
from ocicore.digest import Digest
from ocicore.errors import InvalidInputError
from ocicore.fsutil import write_atomic
from ocicore.jsonutil import canonical_json
from ocicore.layout import REF_NAME_ANNOTATION, OCILayout
from ocicore.models import OCI_INDEX, Descriptor
from ocicore.progress import NoProgress, Progress
from ocicore.reference import Reference
from ocicore.store import ContentStore
from ocicore.tarpack import source_date_epoch
from publisher.iso_inputs import (
    BOOTSTRAP_ENV_FILE,
    HOST_IMAGE_ARCHIVE,
    IMAGE_ARCHIVE_NAME,
    IMAGES_DIR,
    OVERLAY_DIR,
    SEED_DIR,
    IsoInputError,
    IsoInputs,
    StagingError,
    check_name,
    check_version,
    check_volume_id,
    default_volume_id,
    render_bootstrap_env,
    render_meta_data,
    render_user_data,
)

__all__ = [
    "HOST_IMAGE_ARCHIVE",
    "IMAGE_ARCHIVE_NAME",
    "OVERLAY_SOURCE",
    "REQUIRED_STAGED_FILES",
    "BaseIsoError",
    "DestinationExistsError",
    "ImageArchive",
    "IsoInputError",
    "IsoInputs",
    "StagingError",
    "checksum_path",
    "default_volume_id",
    "export_image_archive",
    "remaster",
    "render_bootstrap_env",
    "render_meta_data",
    "render_user_data",
    "stage_overlay",
]

#: The overlay in a source checkout (``iso/overlay``).
OVERLAY_SOURCE = Path(__file__).resolve().parent.parent / "iso" / "overlay"

_TRUST_PEM = "etc/appliance/trust.pem"
#: The overlay files the host needs; stage_overlay and remaster refuse a tree without them.
_OVERLAY_FILES = (
    "etc/systemd/system/appliance-bootstrap.service",
    "etc/systemd/system/appliance-bootstrap.timer",
    "usr/local/lib/appliance/bootstrap.sh",
    BOOTSTRAP_ENV_FILE,
)
REQUIRED_STAGED_FILES: tuple[str, ...] = (
    *(f"{OVERLAY_DIR}/{f}" for f in (*_OVERLAY_FILES, _TRUST_PEM)),
    f"{IMAGES_DIR}/{IMAGE_ARCHIVE_NAME}",
    f"{SEED_DIR}/user-data",
    f"{SEED_DIR}/meta-data",
)
_ISO_MAGIC_OFFSET = 16 * 2048  # the primary volume descriptor, sector 16
_XORRISO_TIMEOUT_S = 3600


# -- errors ----------------------------------------------------------------------------


class BaseIsoError(InvalidInputError):
    """The base ISO is missing, not an ISO 9660 image, or already remastered."""


class DestinationExistsError(InvalidInputError):
    """An output file exists and ``overwrite`` was not given."""


# -- the image archive -----------------------------------------------------------------


@dataclass(frozen=True)
class ImageArchive:
    """An OCI archive written by ``export_image_archive``."""

    path: Path
    digest: Digest
    media_type: str
    names: tuple[str, ...]
    size: int


def export_image_archive(
    store: ContentStore,
    repo: str,
    reference: str | Digest,
    dest_tar: Path,
    *,
    registry: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ImageArchive:
    """Write ``repo:reference`` (a tag or a digest; an image or an index with all its
    platforms) from ``store`` to ``dest_tar`` as an OCI archive for ``ctr images import``.

    ``registry`` names the image in the archive (``<registry>/<repo>:<tag>`` and
    ``<registry>/<repo>@<digest>``, see the module docstring); it defaults to the
    registry of a ``RegistryClient`` and is required for other stores. The tar is
    deterministic (``OCILayout.write_tar``) and moved into place only when complete.

    Raises ``DestinationExistsError`` when ``dest_tar`` exists (unless ``overwrite``),
    ``InvalidInputError`` without a registry name, and what ``ocicore.copy.copy``
    raises (``NotFoundError``, ``IntegrityError``, ``LayoutError``, registry errors).
    """
    dest_tar = Path(dest_tar)
    if dest_tar.exists() and not overwrite:
        raise DestinationExistsError(
            f"{dest_tar} already exists", hint="remove it, or pass overwrite=True"
        )
    registry = registry or getattr(store, "registry", None)
    if not isinstance(registry, str) or not registry:
        raise InvalidInputError(
            f"no registry name for the image {repo} in the archive",
            hint="pass registry=<host[:port]> the appliance will know the image by",
        )
    tag = reference if isinstance(reference, str) else None
    named = Reference(registry, repo, tag)  # validates host, repository and tag
    dest_tar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=dest_tar.parent) as tmp:
        layout = OCILayout(Path(tmp) / "layout", create=True, config=_config_of(store))
        result = copy(store, repo, reference, layout, repo, tags=(), progress=progress)
        names = [f"{named.registry}/{repo}@{result.digest}"]
        if tag is not None:
            names.insert(0, str(named))
        entries = [
            Descriptor(
                media_type=result.media_type,
                digest=result.digest,
                size=result.size,
                annotations={REF_NAME_ANNOTATION: name},
            ).model_dump(mode="json", by_alias=True, exclude_none=True)
            for name in names
        ]
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        (layout.path / "index.json").write_bytes(canonical_json(index))
        # Reopen: the layout must read back, and the entry must resolve to the copy.
        reopened = OCILayout(layout.path, config=layout.config)
        if reopened.resolve(repo, result.digest).digest != result.digest:  # pragma: no cover
            raise InvalidInputError(f"the exported layout does not resolve {result.digest}")
        reopened.write_tar(dest_tar)
    return ImageArchive(
        path=dest_tar,
        digest=result.digest,
        media_type=result.media_type,
        names=tuple(names),
        size=dest_tar.stat().st_size,
    )


def _config_of(store: ContentStore) -> ClientConfig | None:
    config = getattr(store, "config", None)
    return config if isinstance(config, ClientConfig) else None


# -- staging ---------------------------------------------------------------------------


def stage_overlay(
    inputs: IsoInputs, overlay_src: Path, image_archive: Path, staging_dir: Path
) -> Path:
    """Lay out the ISO's additions in ``staging_dir`` (missing or empty) and return it.

    ``overlay_src`` (normally ``OVERLAY_SOURCE``) is copied to ``appliance/overlay``
    with ``etc/appliance/bootstrap.env`` rendered from its template and
    ``etc/appliance/trust.pem`` written from the inputs; ``image_archive`` goes to
    ``appliance/images/control-plane.oci.tar``; the seed to ``nocloud/``. Modes are
    normalised: directories 0755, files 0755 when executable in the source, else 0644.

    Raises ``StagingError`` when ``staging_dir`` is not empty, ``overlay_src`` lacks a
    required file or holds something other than regular files and directories, or
    ``image_archive`` is not an OCI archive.
    """
    overlay_src, staging_dir = Path(overlay_src), Path(staging_dir)
    _check_overlay_source(overlay_src)
    _check_image_archive(Path(image_archive))
    if staging_dir.exists() and (not staging_dir.is_dir() or any(staging_dir.iterdir())):
        raise StagingError(
            f"staging directory {staging_dir} is not empty",
            hint="pass a new or empty directory",
        )
    env_text = render_bootstrap_env(inputs, (overlay_src / BOOTSTRAP_ENV_FILE).read_text())
    staging_dir.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the destination and renamed into place: never half a staging tree.
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=staging_dir.parent) as tmp:
        tree = Path(tmp) / "tree"
        overlay = tree / OVERLAY_DIR
        overlay.mkdir(mode=0o755, parents=True)
        for src in sorted(overlay_src.rglob("*")):
            dest = overlay / src.relative_to(overlay_src)
            if src.is_dir():
                dest.mkdir(mode=0o755, parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                dest.chmod(0o755 if src.stat().st_mode & 0o111 else 0o644)
        _write_file(overlay / BOOTSTRAP_ENV_FILE, env_text)
        _write_file(overlay / _TRUST_PEM, inputs.trust_pem)
        images = tree / IMAGES_DIR
        images.mkdir(mode=0o755)
        shutil.copyfile(image_archive, images / IMAGE_ARCHIVE_NAME)
        (images / IMAGE_ARCHIVE_NAME).chmod(0o644)
        seed = tree / SEED_DIR
        seed.mkdir(mode=0o755)
        _write_file(seed / "user-data", render_user_data(inputs, env_text))
        _write_file(seed / "meta-data", render_meta_data(inputs))
        for directory in (tree, tree / "appliance"):
            directory.chmod(0o755)
        if staging_dir.exists():
            staging_dir.rmdir()
        tree.rename(staging_dir)
    return staging_dir


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)


def _check_overlay_source(overlay_src: Path) -> None:
    if not overlay_src.is_dir():
        raise StagingError(
            f"overlay source {overlay_src} is not a directory", hint="pass iso/overlay"
        )
    missing = [f for f in _OVERLAY_FILES if not (overlay_src / f).is_file()]
    if missing:
        raise StagingError(
            f"overlay source {overlay_src} lacks {', '.join(missing)}",
            hint="pass the repository's iso/overlay",
        )
    for path in overlay_src.rglob("*"):
        mode = path.lstat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise StagingError(
                f"overlay source entry {path} is not a regular file or directory",
                hint="the overlay holds only files and directories",
            )


def _check_image_archive(archive: Path) -> None:
    if not archive.is_file():
        raise StagingError(
            f"image archive {archive} does not exist", hint="run export_image_archive first"
        )
    try:
        with tarfile.open(archive, mode="r:") as tar:
            names = {PurePosixPath(m.name).as_posix() for m in tar}
    except (tarfile.TarError, OSError) as exc:
        raise StagingError(
            f"image archive {archive} is not a readable tar ({exc})",
            hint="pass the OCI archive written by export_image_archive",
        ) from None
    if not {"oci-layout", "index.json"} <= names:
        raise StagingError(
            f"image archive {archive} is not an OCI archive (no oci-layout/index.json)",
            hint="pass the OCI archive written by export_image_archive",
        )


def _check_staging(staging_dir: Path) -> None:
    if not staging_dir.is_dir():
        raise StagingError(
            f"staging directory {staging_dir} does not exist", hint="run stage_overlay first"
        )
    missing = [f for f in REQUIRED_STAGED_FILES if not (staging_dir / f).is_file()]
    if missing:
        raise StagingError(
            f"staging directory {staging_dir} lacks {', '.join(missing)}",
            hint="stage it again with stage_overlay",
        )
    extra = sorted(p.name for p in staging_dir.iterdir() if p.name not in ("appliance", SEED_DIR))
    if extra:
        raise StagingError(
            f"staging directory {staging_dir} has unexpected entries: {', '.join(extra)}",
            hint="only appliance/ and nocloud/ go onto the ISO",
        )
    for path in staging_dir.rglob("*"):
        mode = path.lstat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise StagingError(
                f"staging entry {path} is not a regular file or directory",
                hint="stage it again with stage_overlay",
            )


# -- remastering -----------------------------------------------------------------------


def checksum_path(iso: Path) -> Path:
    """``<iso>.sha256``, next to the ISO."""
    return iso.with_name(iso.name + ".sha256")


def remaster(
    base_iso: Path,
    staging_dir: Path,
    dest_dir: Path,
    name: str,
    version: str,
    *,
    volume_id: str | None = None,
    overwrite: bool = False,
    epoch: int | None = None,
    xorriso: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write ``dest_dir/<name>-<version>.iso`` (the base ISO plus ``staging_dir``'s
    ``appliance/`` and ``nocloud/``, the base's boot setup replayed) and
    ``<iso>.sha256`` (``<hex>  <file name>``, as ``sha256sum -c`` reads it). Returns the
    ISO's path.

    ``volume_id`` defaults to ``default_volume_id(name, version)``; ``epoch`` (the time
    of added files) to ``SOURCE_DATE_EPOCH`` or 0. Two runs with equal inputs and
    xorriso version write identical bytes (see the module docstring). The ISO is
    written to a temporary file in ``dest_dir`` and moved into place when complete.

    Raises ``IsoInputError`` for a bad name, version or volume id, ``BaseIsoError``,
    ``StagingError``, ``DestinationExistsError`` (unless ``overwrite``),
    ``ToolMissingError`` when xorriso is not installed and ``ToolFailedError`` when it
    fails.
    """
    base_iso, staging_dir, dest_dir = Path(base_iso), Path(staging_dir), Path(dest_dir)
    for what, value, check in (
        ("name", name, check_name),
        ("version", version, check_version),
        ("volume_id", volume_id, check_volume_id),
    ):
        if value is not None:
            try:
                check(value)
            except ValueError as exc:
                raise IsoInputError(f"ISO {what} {value!r}: {exc}") from None
    label = volume_id or default_volume_id(name, version)
    epoch = source_date_epoch() if epoch is None else epoch
    iso = dest_dir / f"{name}-{version}.iso"
    checksum = checksum_path(iso)
    for out in (iso, checksum):
        if out.exists() and not overwrite:
            raise DestinationExistsError(
                f"{out} already exists", hint="remove it, or pass overwrite=True"
            )
    uuid = _base_volume_uuid(base_iso) or time.strftime("%Y%m%d%H%M%S00", time.gmtime(epoch))
    _check_staging(staging_dir)
    binary = find_tool("xorriso", xorriso)
    _check_not_remastered(binary, base_iso)

    report = progress or NoProgress()
    key = f"remaster:{iso.name}"
    report.start(key, f"remaster {base_iso.name} -> {iso.name}", None)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".remaster-", dir=dest_dir) as tmp:
            partial = Path(tmp) / iso.name
            added = ["/appliance", "/nocloud"]
            args = [
                "-no_rc",
                "-abort_on", "FAILURE",
                "-return_with", "SORRY", "32",
                "-report_about", "SORRY",
                "-indev", str(base_iso),
                "-outdev", str(partial),
                *(["-joliet", "on"] if _has_joliet(base_iso) else []),
                "-volid", label,
                "-iso_nowtime", f"={epoch}",
                "-volume_date", "uuid", uuid,
                "-volume_date", "all_file_dates", "set_to_mtime",
                "-map", str(staging_dir / "appliance"), "/appliance",
                "-map", str(staging_dir / SEED_DIR), "/nocloud",
                "-chown_r", "0", *added, "--",
                "-chgrp_r", "0", *added, "--",
                "-alter_date_r", "b-c", f"={epoch}", *added, "--",
                "-boot_image", "any", "replay",
                "-boot_image", "any", "gpt_disk_guid=volume_date_uuid",
            ]  # fmt: skip
            _run_xorriso(binary, args, what=f"remastering {base_iso}", epoch=epoch)
            digest = _sha256_file(partial)
            partial.chmod(0o644)
            # Never a new ISO next to an old checksum, even if the next write fails.
            checksum.unlink(missing_ok=True)
            os.replace(partial, iso)
        write_atomic(checksum, f"{digest}  {iso.name}\n".encode())
    except BaseException:
        report.finish(key, "failed")
        raise
    report.finish(key, "done")
    return iso


def _run_xorriso(binary: str, args: Sequence[str], *, what: str, epoch: int) -> str:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    try:
        proc = subprocess.run(
            [binary, *args], capture_output=True, timeout=_XORRISO_TIMEOUT_S, env=env,
            check=False,
        )  # fmt: skip
    except FileNotFoundError:
        raise ToolMissingError(
            f"xorriso at {binary} does not exist",
            hint="run ./scripts/setup.sh (it installs xorriso), or put xorriso on PATH",
        ) from None
    except subprocess.TimeoutExpired:
        raise ToolFailedError(f"{what}: xorriso did not finish in {_XORRISO_TIMEOUT_S}s") from None
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        problem = next(
            (ln for ln in lines if any(s in ln for s in (": FAILURE :", ": SORRY :", "FATAL"))),
            lines[-1] if lines else "",
        )
        raise ToolFailedError(
            f"{what}: xorriso failed (exit {proc.returncode}): {problem}",
            hint="run the xorriso command by hand to see all output",
            stderr=stderr,
        )
    return proc.stdout.decode(errors="replace")


def _check_not_remastered(binary: str, base_iso: Path) -> None:
    """Refuse a base that already has /appliance or /nocloud (xorriso would merge)."""
    out = _run_xorriso(
        binary,
        ["-no_rc", "-abort_on", "FAILURE", "-return_with", "SORRY", "32",
         "-report_about", "SORRY", "-indev", str(base_iso), "-find", "/", "-maxdepth", "1"],
        what=f"reading {base_iso}",
        epoch=0,
    )  # fmt: skip
    present = {line.strip().strip("'") for line in out.splitlines()}
    taken = sorted(p for p in ("/appliance", "/nocloud") if p in present)
    if taken:
        raise BaseIsoError(
            f"base ISO {base_iso} already contains {', '.join(taken)}",
            hint="remaster the original base ISO, not an appliance ISO",
        )


def _read_descriptors(base_iso: Path) -> list[bytes]:
    """The ISO 9660 volume descriptors (sector 16 up to the terminator)."""
    if not base_iso.is_file():
        raise BaseIsoError(f"base ISO {base_iso} does not exist", hint="check the path")
    descriptors: list[bytes] = []
    with base_iso.open("rb") as fh:
        fh.seek(_ISO_MAGIC_OFFSET)
        for _ in range(64):
            block = fh.read(2048)
            if len(block) < 2048 or block[1:6] != b"CD001":
                break
            if block[0] == 255:
                return descriptors
            descriptors.append(block)
    if descriptors and descriptors[0][0] == 1:
        return descriptors
    raise BaseIsoError(
        f"base ISO {base_iso} is not an ISO 9660 image (no volume descriptors at sector 16)",
        hint="pass the distribution's installer or live ISO",
    )


def _base_volume_uuid(base_iso: Path) -> str | None:
    """The base's volume modification time (``YYYYMMDDhhmmsscc``), GRUB's fs-uuid."""
    pvd = _read_descriptors(base_iso)[0]
    value = pvd[830:846].decode("ascii", errors="replace")
    if value.isdigit() and value != "0" * 16 and 1970 <= int(value[:4]) <= 2999:
        return value
    return None


def _has_joliet(base_iso: Path) -> bool:
    """Whether the base has a Joliet tree (xorriso drops it unless asked to keep one)."""
    return any(
        d[0] == 2 and d[88:91] in (b"%/@", b"%/C", b"%/E") for d in _read_descriptors(base_iso)
    )


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


