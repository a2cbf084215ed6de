"""Build the control-plane image without a daemon, and push it to any store.

``build_image`` reads the build description (``control_plane/build.toml``, see
``publisher.image_spec``), resolves the base image to a digest (an OCI layout or a
registry), appends the layers the description lists (``publisher.image_layers``) and
writes the image config and manifest: for one platform an image manifest, for several
an image index over one manifest per platform (the base must then be an index with
those platforms; the third-party wheels are installed per platform). Nothing is pushed
yet: the new blobs (configs and added layers, a few MB) are held in memory, the base's
layers stay where they are.

Determinism: the same build description, source files, wheels, base digest, build
inputs (version, revision, source) and ``epoch`` give the same bytes and digests, on
any machine with the same zlib: layers come from ``ocicore.tarpack`` (files' mtimes
and the umask do not matter), JSON is canonical, ``created`` and every history entry's
time is ``epoch`` (``SOURCE_DATE_EPOCH``, default 0) in RFC 3339.

``push_image`` copies the base's blobs (a cross-repository mount when the base lives in
the destination's registry and the same ``RegistryClient`` is given for both), then the
new blobs, then the manifests, tag last; whatever the destination has is skipped, so a
second push of the same image uploads no blob bytes. The version tag is immutable:
pushing other content under an existing tag raises ``ImmutableTagError``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocicore.copy import copy
from ocicore.digest import Digest
from ocicore.errors import NotFoundError
from ocicore.fsutil import rfc3339
from ocicore.jsonutil import canonical_json
from ocicore.layout import OCILayout
from ocicore.models import OCI_IMAGE_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor
from ocicore.reference import Reference
from ocicore.store import ContentStore
from ocicore.tarpack import Layer, source_date_epoch
from publisher.image_base import BaseImage, BaseImageError, read_base_files, resolve_base
from publisher.image_layers import (
    accounts_layer,
    directory_layer,
    python_packages_layer,
    python_requirements_layer,
)
from publisher.image_spec import (
    AccountsLayer,
    DirectoryLayer,
    ImageBuildSpec,
    PythonPackagesLayer,
    PythonRequirementsLayer,
    render_labels,
)
from publisher.push import ImmutableTagError

__all__ = ["AddedLayer", "BuiltImage", "ImagePushResult", "PlatformImage", "build_image",
           "describe", "push_image", "rfc3339"]

BUILDER = "appliance-release image build"
#: Docker's gzip layer type is the same bytes as OCI's; manifests we write say OCI.
_GZIP_LAYER_TYPES = {OCI_LAYER_GZIP, "application/vnd.docker.image.rootfs.diff.tar.gzip"}
#: Labels that are also copied to the manifest's (and index's) annotations.
_ANNOTATED_LABELS = ("org.opencontainers.image.created", "org.opencontainers.image.source",
                     "org.opencontainers.image.revision", "org.opencontainers.image.version",
                     "org.opencontainers.image.title")


@dataclass(frozen=True)
class AddedLayer:
    """A layer this build appended: which ``[[layers]]`` entry made it, and the blob."""

    kind: str
    comment: str
    layer: Layer

    def descriptor(self) -> Descriptor:
        return Descriptor(media_type=OCI_LAYER_GZIP, digest=Digest.parse(self.layer.digest),
                          size=self.layer.size)


@dataclass(frozen=True)
class PlatformImage:
    """The image for one platform: config, manifest, the base it extends, added layers."""

    platform: str
    base: BaseImage
    config: bytes
    manifest: bytes
    layers: tuple[AddedLayer, ...]

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest)

    @property
    def config_digest(self) -> Digest:
        return Digest.of(self.config)


@dataclass(frozen=True)
class BuiltImage:
    """A built image, not pushed yet. ``data``/``media_type``/``digest`` are the top
    document: the manifest (one platform) or the index (several)."""

    media_type: str
    data: bytes
    images: tuple[PlatformImage, ...]
    base_store: ContentStore
    base_repository: str
    base_digest: Digest

    @property
    def digest(self) -> Digest:
        return Digest.of(self.data)

    def new_blobs(self) -> dict[Digest, bytes]:
        """The blobs this build made (configs and added layers), by digest."""
        blobs: dict[Digest, bytes] = {}
        for image in self.images:
            blobs[image.config_digest] = image.config
            for added in image.layers:
                blobs[Digest.parse(added.layer.digest)] = added.layer.compressed
        return blobs


@dataclass(frozen=True)
class ImagePushResult:
    """What ``push_image`` did. ``outcome`` is ``"pushed"``, or ``"unchanged"`` when the
    tag already held exactly this image (then nothing else was sent)."""

    repository: str
    tag: str
    digest: Digest
    outcome: str
    blobs_uploaded: int
    blobs_skipped: int
    blobs_mounted: int
    bytes_uploaded: int


def _base_source(
    spec: ImageBuildSpec, source_root: Path, base_store: ContentStore | None
) -> tuple[ContentStore, str, str | Digest, str]:
    """Store, repository, reference and display name of the spec's base; ``base_store``
    (when given) replaces the spec's layout, or supplies the registry client."""
    if spec.base.reference is not None:
        ref = Reference.parse(spec.base.reference, default_tag=None)
        assert ref.digest is not None  # the spec requires it
        if base_store is None:
            raise BaseImageError(
                f"the base {spec.base.reference} is in a registry: pass its client as "
                "base_store", hint="or build the base into an OCI layout")
        return base_store, ref.repository, ref.digest, spec.base.reference
    assert spec.base.layout is not None and spec.base.tag is not None
    assert spec.base.repository is not None
    name = f"{spec.base.repository}:{spec.base.tag}"
    if base_store is not None:
        return base_store, spec.base.repository, spec.base.tag, name
    layout = source_root / spec.base.layout
    if not (layout / "oci-layout").is_file():
        raise BaseImageError(f"the base image layout {layout} does not exist",
                             hint="run ./scripts/setup.sh (it builds the base image once)")
    return OCILayout(layout), spec.base.repository, spec.base.tag, name


def build_image(
    spec: ImageBuildSpec,
    *,
    source_root: Path,
    version: str,
    revision: str,
    source: str,
    base_store: ContentStore | None = None,
    base_repo: str | None = None,
    base_ref: str | Digest | None = None,
    platforms: Sequence[str] | None = None,
    epoch: int | None = None,
) -> BuiltImage:
    """Build the image that ``spec`` describes, from the files under ``source_root``.

    The base comes from the spec (an OCI layout under ``source_root``) unless
    ``base_store``/``base_repo``/``base_ref`` are given (a spec with a registry
    reference needs at least ``base_store``: the registry client, with its credentials).
    ``platforms`` (``["linux/amd64", "linux/arm64"]``): ``None`` builds the base's
    platforms, one → an image manifest, several → an index. ``epoch`` defaults to
    ``SOURCE_DATE_EPOCH`` (else 0). ``version``, ``revision`` and ``source`` fill the
    labels' placeholders.

    Raises ``BaseImageError`` (base missing, not pinned as the spec says, lacking a
    platform, malformed), ``ImageLayerError`` (a package or wheel missing, an account
    conflict), ``PackInputError`` (a file the packer refuses), and the stores' errors.
    """
    store, spec_repo, spec_ref, base_name = _base_source(spec, source_root, base_store)
    repository = base_repo or spec_repo
    reference = base_ref if base_ref is not None else spec_ref
    when = source_date_epoch() if epoch is None else epoch
    created = rfc3339(when)
    labels = render_labels(spec, {"version": version, "revision": revision, "source": source,
                                  "created": created})
    with tempfile.TemporaryDirectory(prefix="image-build-") as tmp:
        workdir = Path(tmp)
        base = resolve_base(store, repository, reference, platforms=platforms,
                            pinned=spec.base.digest, workdir=workdir)
        shared: dict[int, Layer] = {}  # platform-independent layers, by position in spec
        images = []
        for base_image in base.images:
            added = _layers_for(spec, source_root, store, repository, base_image, shared,
                                workdir=workdir, mtime=when)
            config = _config(spec, base_image, added, labels, created)
            annotations = {
                **{k: labels[k] for k in _ANNOTATED_LABELS if k in labels},
                "org.opencontainers.image.base.digest": str(base_image.manifest_digest),
                "org.opencontainers.image.base.name": base_name,
            }
            manifest = _manifest(base_image, config, added, annotations)
            images.append(PlatformImage(base_image.platform_text, base_image, config, manifest,
                                        tuple(added)))
    if len(images) == 1:
        media_type, data = OCI_MANIFEST, images[0].manifest
    else:
        media_type = OCI_INDEX
        data = canonical_json({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": str(i.digest), "size": len(i.manifest),
                 "platform": i.base.platform.model_dump(mode="json", by_alias=True,
                                                         exclude_none=True)}
                for i in images
            ],
            "annotations": {k: labels[k] for k in _ANNOTATED_LABELS if k in labels},
        })
    return BuiltImage(media_type, data, tuple(images), store, repository, base.digest)


def _layers_for(
    spec: ImageBuildSpec, source_root: Path, store: ContentStore, repository: str,
    base_image: BaseImage, shared: dict[int, Layer], *, workdir: Path, mtime: int,
) -> list[AddedLayer]:
    added: list[AddedLayer] = []
    for position, entry in enumerate(spec.layers):
        layer: Layer | None
        if isinstance(entry, AccountsLayer):
            assert spec.user is not None
            files = read_base_files(store, repository, base_image, ("etc/passwd", "etc/group"),
                                    workdir)
            layer = accounts_layer(spec.user, files["etc/passwd"], files["etc/group"],
                                   mtime=mtime)
        elif isinstance(entry, PythonRequirementsLayer):
            assert spec.python is not None
            staging = workdir / f"site-{base_image.platform.architecture}-{position}"
            layer = python_requirements_layer(
                entry, spec.python, source_root, base_image.platform.architecture,
                staging=staging, mtime=mtime)
        elif position in shared:
            layer = shared[position]
        elif isinstance(entry, DirectoryLayer):
            layer = shared[position] = directory_layer(entry, mtime=mtime)
        else:
            assert isinstance(entry, PythonPackagesLayer)
            layer = shared[position] = python_packages_layer(entry, source_root, mtime=mtime)
        if layer is not None:
            added.append(AddedLayer(entry.kind, entry.comment, layer))
    return added


def _config(
    spec: ImageBuildSpec, base: BaseImage, added: list[AddedLayer], labels: dict[str, str],
    created: str,
) -> bytes:
    config: dict[str, Any] = dict(base.config)
    container: dict[str, Any] = dict(config.get("config") or {})
    wanted = spec.config
    env = [e for e in container.get("Env") or [] if isinstance(e, str)]
    for name, value in wanted.env.items():
        setting = f"{name}={value}"
        index = next((i for i, e in enumerate(env) if e.split("=", 1)[0] == name), None)
        if index is None:
            env.append(setting)
        else:
            env[index] = setting
    container["Env"] = env
    container["User"] = wanted.user
    container["Entrypoint"] = list(wanted.entrypoint)
    if wanted.cmd:
        container["Cmd"] = list(wanted.cmd)
    else:
        container.pop("Cmd", None)  # as Docker does: a new entrypoint resets the base's cmd
    if wanted.workdir:
        container["WorkingDir"] = wanted.workdir
    if wanted.exposed_ports:
        ports = dict(container.get("ExposedPorts") or {})
        ports.update({port: {} for port in wanted.exposed_ports})
        container["ExposedPorts"] = ports
    if wanted.stop_signal:
        container["StopSignal"] = wanted.stop_signal
    container["Labels"] = {**(container.get("Labels") or {}), **labels}
    config["config"] = container
    config["created"] = created
    config["rootfs"] = {
        "type": "layers",
        "diff_ids": [*base.config["rootfs"]["diff_ids"], *(a.layer.diff_id for a in added)],
    }
    history = [h for h in config.get("history") or [] if isinstance(h, dict)]
    history += [{"created": created, "created_by": f"{BUILDER}: {a.kind} layer",
                 "comment": a.comment} for a in added]
    history.append({"created": created, "created_by": f"{BUILDER}: config (user, entrypoint, "
                    "env, ports, labels)", "empty_layer": True})
    config["history"] = history
    for key in ("container", "container_config", "docker_version"):  # Docker build leftovers
        config.pop(key, None)
    return canonical_json(config)


def _manifest(
    base: BaseImage, config: bytes, added: list[AddedLayer], annotations: dict[str, str]
) -> bytes:
    layers = []
    for descriptor in base.manifest.layers:
        doc = descriptor.model_dump(mode="json", by_alias=True, exclude_none=True)
        if descriptor.media_type in _GZIP_LAYER_TYPES:
            doc["mediaType"] = OCI_LAYER_GZIP
        layers.append(doc)
    layers += [a.descriptor().model_dump(mode="json", by_alias=True, exclude_none=True)
               for a in added]
    return canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_IMAGE_CONFIG, "digest": str(Digest.of(config)),
                   "size": len(config)},
        "layers": layers,
        "annotations": annotations,
    })


# -- pushing ------------------------------------------------------------------------------


def push_image(
    built: BuiltImage, store: ContentStore, repository: str, tag: str, *, immutable: bool = True,
    concurrency: int = 4,
) -> ImagePushResult:
    """Push ``built`` to ``store`` as ``repository:tag`` (a registry or an OCI layout).

    Order: base blobs (``ocicore.copy`` of each base manifest: mounted or skipped when
    possible), new blobs, per-platform manifests, then the top manifest or index under
    ``tag``. With ``immutable`` (the default, for version tags) a tag that already holds
    this image returns ``"unchanged"`` at the cost of one request, and a tag holding
    other content raises ``ImmutableTagError`` naming both digests.
    """
    try:
        existing: Digest | None = store.resolve(repository, tag).digest
    except NotFoundError:
        existing = None
    if existing == built.digest:
        return ImagePushResult(repository, tag, built.digest, "unchanged", 0, 0, 0, 0)
    if existing is not None and immutable:
        raise ImmutableTagError(
            f"control-plane image {repository}:{tag} already exists as {existing}; the new "
            f"build is {built.digest}",
            hint="version tags are immutable: bump the version (or rebuild the same inputs)")
    uploaded = skipped = mounted = size = 0
    for image in built.images:
        copied = copy(built.base_store, built.base_repository, image.base.manifest_digest,
                      store, repository, tags=(), concurrency=concurrency)
        uploaded += copied.blobs_copied
        skipped += copied.blobs_skipped
        mounted += copied.blobs_mounted
        size += copied.bytes_copied
    for digest, data in sorted(built.new_blobs().items(), key=lambda item: str(item[0])):
        outcome = store.push_blob(repository, data, digest)
        if outcome == "uploaded":
            uploaded += 1
            size += len(data)
        elif outcome == "mounted":
            mounted += 1
        else:
            skipped += 1
    if built.media_type == OCI_INDEX:
        for image in built.images:
            store.push_manifest(repository, image.manifest, OCI_MANIFEST)
    store.push_manifest(repository, built.data, built.media_type, tag=tag)
    return ImagePushResult(repository, tag, built.digest, "pushed", uploaded, skipped, mounted,
                           size)


def describe(built: BuiltImage) -> dict[str, Any]:
    """A JSON-able summary: digest, media type, base, and per platform the layers."""
    return {
        "digest": str(built.digest),
        "mediaType": built.media_type,
        "base": {"repository": built.base_repository, "digest": str(built.base_digest)},
        "platforms": [
            {
                "platform": image.platform,
                "manifest": str(image.digest),
                "config": str(image.config_digest),
                "baseManifest": str(image.base.manifest_digest),
                "addedLayers": [
                    {"kind": a.kind, "digest": a.layer.digest, "size": a.layer.size}
                    for a in image.layers
                ],
            }
            for image in built.images
        ],
    }

