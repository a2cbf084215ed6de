"""The base of an image build: which manifests, which configs, and files from its layers.

``resolve_base`` turns a tag or digest into the base's digest (once: everything after it
is read by digest) and the image(s) to build on: one manifest, or the chosen platforms
of an index. ``read_base_files`` finds files such as ``/etc/passwd`` in the layers as a
container runtime would see them (top layer first, whiteouts honoured).
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocicore.digest import Digest
from ocicore.errors import DigestMismatchError, InvalidInputError, SizeLimitError, ToolkitError
from ocicore.jsonutil import load_json_strict
from ocicore.layout import OCILayout
from ocicore.models import Descriptor, Index, Manifest, Platform
from ocicore.store import ContentStore

MAX_CONFIG_BYTES = 4 * 1024 * 1024
_MAX_BASE_FILE_BYTES = 4 * 1024 * 1024
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_ARM64_DEFAULT_VARIANT = "v8"


class BaseImageError(ToolkitError):
    """The base image cannot be used for the build (wrong platform, malformed, …)."""

    exit_code = 2


@dataclass(frozen=True)
class BaseImage:
    """One platform of the base: its manifest (digest, parsed) and its config (JSON)."""

    manifest_digest: Digest
    manifest: Manifest
    config: dict[str, Any]
    platform: Platform

    @property
    def platform_text(self) -> str:
        return format_platform(self.platform)


@dataclass(frozen=True)
class ResolvedBase:
    """What the base reference resolved to: ``digest`` (a manifest or an index) and the
    images to build on, in the order the platforms were asked for."""

    digest: Digest
    is_index: bool
    images: tuple[BaseImage, ...]


@dataclass(frozen=True)
class BaseFile:
    """A regular file from the base's layers, with its owner and permission bits."""

    data: bytes
    mode: int
    uid: int
    gid: int


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` (``linux/amd64``, ``linux/arm64/v8``) as a ``Platform``.

    Raises ``InvalidInputError`` for anything else.
    """
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(p and p.isascii() and p.isalnum() for p in parts):
        raise InvalidInputError(
            f"invalid platform {text!r}", hint="write os/arch[/variant], e.g. linux/amd64"
        )
    return Platform(os=parts[0], architecture=parts[1],
                    variant=parts[2] if len(parts) == 3 else None)


def format_platform(platform: Platform) -> str:
    text = f"{platform.os}/{platform.architecture}"
    return f"{text}/{platform.variant}" if platform.variant else text


def _same_platform(wanted: Platform, offered: Platform) -> bool:
    if (wanted.os, wanted.architecture) != (offered.os, offered.architecture):
        return False
    if wanted.variant is None:
        return True
    default = _ARM64_DEFAULT_VARIANT if offered.architecture == "arm64" else None
    return wanted.variant == (offered.variant or default)


def resolve_base(
    store: ContentStore,
    repository: str,
    reference: str | Digest,
    *,
    platforms: Sequence[str] | None = None,
    pinned: Digest | None = None,
    workdir: Path,
) -> ResolvedBase:
    """Resolve the base and read the manifests and configs to build on.

    ``platforms`` ``None`` means: the base's only platform (a manifest), or every
    platform of an index (attestation entries, ``unknown/unknown``, are not platforms).
    Raises ``BaseImageError`` when ``pinned`` is given and the reference resolves to
    another digest, when a wanted platform is missing, or when the base is malformed;
    the stores' errors (``NotFoundError`` …) pass through.
    """
    digest = reference if isinstance(reference, Digest) else store.resolve(
        repository, reference).digest
    if pinned is not None and digest != pinned:
        raise BaseImageError(
            f"base {repository}:{reference} is {digest}, not the pinned {pinned}",
            hint="update the pin in build.toml, or rebuild the base it was made for",
        )
    fetched = store.get_manifest(repository, digest)
    parsed = fetched.parse()
    wanted = [parse_platform(p) for p in platforms] if platforms is not None else None
    if isinstance(parsed, Manifest):
        image = _read_image(store, repository, digest, parsed, None, workdir)
        if wanted is not None and (len(wanted) != 1 or not _same_platform(wanted[0],
                                                                           image.platform)):
            raise BaseImageError(
                f"base {repository}@{digest} is a single-platform image for "
                f"{image.platform_text}; cannot build {', '.join(platforms or [])}",
                hint="build for the base's platform, or use a multi-platform base (an index)",
            )
        return ResolvedBase(digest, False, (image,))
    assert isinstance(parsed, Index)
    entries = [d for d in parsed.manifests if d.platform is not None
               and d.platform.os != "unknown" and d.platform.architecture != "unknown"]
    chosen: list[Descriptor] = []
    if wanted is None:
        chosen = entries
    else:
        for platform in wanted:
            match = next((d for d in entries if d.platform is not None
                          and _same_platform(platform, d.platform)), None)
            if match is None:
                offered = ", ".join(format_platform(d.platform) for d in entries if d.platform)
                raise BaseImageError(
                    f"base {repository}@{digest} has no {format_platform(platform)} image "
                    f"(it has: {offered or 'none'})",
                    hint="choose platforms the base provides",
                )
            chosen.append(match)
    if not chosen:
        raise BaseImageError(f"base index {repository}@{digest} lists no platform images")
    images = []
    for entry in chosen:
        child = store.get_manifest(repository, entry.digest)
        child_parsed = child.parse()
        if not isinstance(child_parsed, Manifest):
            raise BaseImageError(f"base index {digest} nests an index ({entry.digest})",
                                 hint="use the inner index as the base")
        images.append(_read_image(store, repository, entry.digest, child_parsed,
                                  entry.platform, workdir))
    return ResolvedBase(digest, True, tuple(images))


def _read_image(
    store: ContentStore, repository: str, digest: Digest, manifest: Manifest,
    platform: Platform | None, workdir: Path,
) -> BaseImage:
    descriptor = manifest.config
    what = f"config {descriptor.digest} of base {repository}@{digest}"
    if descriptor.size > MAX_CONFIG_BYTES:
        raise SizeLimitError(f"{what} is {descriptor.size} bytes, over {MAX_CONFIG_BYTES}",
                             hint="this is not an image config")
    path = workdir / f"config-{descriptor.digest.hex}"
    store.fetch_blob(repository, descriptor, path)
    config = load_json_strict(path.read_bytes(), what=what, max_bytes=MAX_CONFIG_BYTES)
    path.unlink()
    if not isinstance(config, dict):
        raise BaseImageError(f"{what} is not a JSON object", hint="the base is not an image")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(manifest.layers):
        raise BaseImageError(
            f"{what}: rootfs.diff_ids does not list one entry per layer "
            f"({len(manifest.layers)} layers)", hint="the base image is malformed")
    if platform is None:
        os_name, arch = config.get("os"), config.get("architecture")
        if not isinstance(os_name, str) or not isinstance(arch, str):
            raise BaseImageError(f"{what} has no os/architecture",
                                 hint="the base image is malformed")
        variant = config.get("variant")
        platform = Platform(os=os_name, architecture=arch,
                            variant=variant if isinstance(variant, str) else None)
    return BaseImage(digest, manifest, config, platform)


# -- files from the layers ----------------------------------------------------------------


def read_base_files(
    store: ContentStore, repository: str, image: BaseImage, paths: Collection[str],
    workdir: Path,
) -> dict[str, BaseFile | None]:
    """The content of ``paths`` (relative, e.g. ``etc/passwd``) in the base's merged root;
    ``None`` for a path that does not exist there.

    Layers are read top first; a whiteout or an opaque directory in a layer hides what
    lower layers have. Raises ``BaseImageError`` when a wanted path is a link or a
    special file, or a layer is not a (compressed) tar; ``IntegrityError`` when a layer
    does not match its digest.
    """
    result: dict[str, BaseFile | None] = {}
    pending = set(paths)
    for descriptor in reversed(image.manifest.layers):
        if not pending:
            break
        found, hidden = _scan_layer(store, repository, descriptor, pending, workdir)
        for path in list(pending):
            if path in found:
                result[path] = found[path]
                pending.discard(path)
            elif path in hidden:
                result[path] = None
                pending.discard(path)
    result.update(dict.fromkeys(pending))
    return result


def _hides(name: str, path: str) -> bool:
    """Whether the layer entry ``name`` hides ``path`` of the layers below it."""
    directory, _, base = name.rpartition("/")
    if base == _OPAQUE:
        return path.startswith(f"{directory}/") if directory else True
    if base.startswith(_WHITEOUT):
        removed = posixpath.join(directory, base[len(_WHITEOUT):])
        return path == removed or path.startswith(f"{removed}/")
    return False


def _scan_layer(
    store: ContentStore, repository: str, descriptor: Descriptor, wanted: set[str],
    workdir: Path,
) -> tuple[dict[str, BaseFile], set[str]]:
    path, temporary = _local_blob(store, repository, descriptor, workdir)
    found: dict[str, BaseFile] = {}
    hidden: set[str] = set()
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                name = posixpath.normpath(member.name.lstrip("/")).removeprefix("./")
                for want in wanted:
                    if _hides(name, want):
                        hidden.add(want)
                if name not in wanted:
                    continue
                if not member.isreg():
                    raise BaseImageError(
                        f"/{name} in base layer {descriptor.digest} is not a regular file",
                        hint="the build edits it and needs its content; use a base where "
                        "it is a plain file")
                if member.size > _MAX_BASE_FILE_BYTES:
                    raise BaseImageError(f"/{name} in base layer {descriptor.digest} is "
                                         f"{member.size} bytes", hint="this is not a plain "
                                         "account database")
                stream = tar.extractfile(member)
                assert stream is not None
                found[name] = BaseFile(stream.read(), member.mode & 0o7777, member.uid,
                                       member.gid)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BaseImageError(
            f"base layer {descriptor.digest} ({descriptor.media_type}) cannot be read as a "
            f"tar: {exc}", hint="only uncompressed and gzip layers can be read") from None
    finally:
        if temporary:
            path.unlink(missing_ok=True)
    return found, hidden


def _local_blob(
    store: ContentStore, repository: str, descriptor: Descriptor, workdir: Path
) -> tuple[Path, bool]:
    """A verified local file with the blob: the layout's own file, else a download."""
    if isinstance(store, OCILayout):
        path = store.blob_path(descriptor.digest)
        hasher = hashlib.new(descriptor.digest.algorithm)
        size = 0
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    hasher.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise BaseImageError(f"base layer {descriptor.digest} is missing from the OCI "
                                 f"layout at {store.path}",
                                 hint="the layout is incomplete; rebuild it") from None
        actual = Digest(descriptor.digest.algorithm, hasher.hexdigest())
        if actual != descriptor.digest or size != descriptor.size:
            raise DigestMismatchError(f"base layer in the OCI layout at {store.path}",
                                      str(descriptor.digest), str(actual),
                                      hint="the layout's blob file is corrupted; rebuild it")
        return path, False
    path = workdir / f"layer-{descriptor.digest.hex}"
    store.fetch_blob(repository, descriptor, path)
    return path, True
