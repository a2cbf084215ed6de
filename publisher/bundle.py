"""The Flux config bundle: the ``flux/`` tree rendered for one release, as a Flux OCI
artifact (DESIGN.md §2, §4).

Rendering (objects are found by ``kind`` and ``metadata.name`` after parsing, never by
text): every chart ``OCIRepository`` gets the published chart's URL, ``ref.tag`` and
``ref.digest`` (Flux pulls by digest when both are set), and ``insecure: true`` for a
plain-HTTP registry; every ``HelmRelease`` must point (``chartRef``) at one of them,
and its ``valuesFrom`` key follows the release's values profile
(``<release>.<profile>.yaml``); the profile's values files get the registry host in
place of ``registry.invalid``. Only ``base/`` and ``profiles/<profile>/`` are shipped.

Packing is deterministic (``ocicore.tarpack``); the artifact is what ``flux push
artifact`` writes — config ``application/vnd.cncf.flux.config.v1+json``, one
``application/vnd.cncf.flux.content.v1.tar+gzip`` layer, annotations
``org.opencontainers.image.created/source/revision`` — except that ``created`` comes
from ``SOURCE_DATE_EPOCH``, so the same inputs give the same digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ocicore.digest import Digest
from ocicore.errors import InvalidInputError
from ocicore.fsutil import rfc3339
from ocicore.models import OCI_MANIFEST, Descriptor, Manifest
from ocicore.store import ContentStore
from ocicore.tarpack import FileEntry, pack_entries
from publisher.push import PushResult, push_immutable

FLUX_CONFIG_MEDIA_TYPE = "application/vnd.cncf.flux.config.v1+json"
FLUX_CONTENT_MEDIA_TYPE = "application/vnd.cncf.flux.content.v1.tar+gzip"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
HELM_API = "helm.toolkit.fluxcd.io/v2"
REGISTRY_PLACEHOLDER = "registry.invalid/"


class BundleError(InvalidInputError):
    """The Flux tree cannot be rendered for this release."""


@dataclass(frozen=True)
class ChartPin:
    """A chart as published in this release."""

    name: str
    version: str
    digest: Digest

    @property
    def tag(self) -> str:
        return self.version.replace("+", "_")


@dataclass(frozen=True)
class BundleInputs:
    flux_dir: Path
    registry: str
    charts_repository: str
    charts: dict[str, ChartPin]
    values_profile: str
    plain_http: bool
    source: str
    revision: str
    epoch: int


@dataclass(frozen=True)
class RenderedBundle:
    """The bundle's files (path → bytes), its HelmRelease names and profile values."""

    files: dict[str, bytes]
    helmreleases: tuple[str, ...]
    profile_values: dict[str, str]


@dataclass(frozen=True)
class PackedBundle:
    content: bytes
    config: bytes
    manifest: bytes

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest)

    def blobs(self) -> list[tuple[bytes | Path, Descriptor]]:
        return [(self.config, Descriptor.of(FLUX_CONFIG_MEDIA_TYPE, self.config)),
                (self.content, Descriptor.of(FLUX_CONTENT_MEDIA_TYPE, self.content))]


def render_bundle(inputs: BundleInputs) -> RenderedBundle:
    """Render the tree; raises ``BundleError`` naming the file and the problem."""
    base = inputs.flux_dir / "base"
    profile_dir = inputs.flux_dir / "profiles" / inputs.values_profile / "values"
    if not base.is_dir():
        raise BundleError(f"{base} does not exist", hint="the Flux tree needs base/")
    if not profile_dir.is_dir():
        raise BundleError(f"values profile {inputs.values_profile!r} has no folder "
                          f"{profile_dir}", hint="add it or choose another values_profile")
    files: dict[str, bytes] = {}
    sources: set[str] = set()
    releases: list[tuple[str, str, str]] = []  # (file, release, chart source)
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = path.relative_to(inputs.flux_dir).as_posix()
        data = path.read_bytes()
        if path.suffix in (".yaml", ".yml"):
            data = _render_yaml(rel, data, inputs, sources, releases)
        files[rel] = data
    for rel, release, source in releases:
        if source not in sources:
            raise BundleError(f"{rel}: HelmRelease {release!r} points at OCIRepository "
                              f"{source!r}, which the bundle does not define")
    unpinned = sorted(set(inputs.charts) - sources)
    if unpinned:
        raise BundleError(f"charts {', '.join(unpinned)} are published but no OCIRepository "
                          "in flux/base points at them", hint="add a source per chart")
    profile_values: dict[str, str] = {}
    for path in sorted(profile_dir.glob("*.yaml")):
        text = path.read_text(encoding="utf-8").replace(REGISTRY_PLACEHOLDER,
                                                         f"{inputs.registry}/")
        profile_values[path.name] = text
        rel = path.relative_to(inputs.flux_dir).as_posix()
        files[rel] = text.encode("utf-8")
    for _, release, _ in releases:
        name = f"{release}.{inputs.values_profile}.yaml"
        if name not in profile_values:
            raise BundleError(f"HelmRelease {release!r} has no values file {profile_dir / name}")
    return RenderedBundle(files, tuple(sorted(r for _, r, _ in releases)), profile_values)


def _render_yaml(rel: str, data: bytes, inputs: BundleInputs, sources: set[str],
                 releases: list[tuple[str, str, str]]) -> bytes:
    try:
        docs = [d for d in yaml.safe_load_all(data) if d is not None]
    except yaml.YAMLError as exc:
        raise BundleError(f"{rel} is not valid YAML: {str(exc).splitlines()[0]}") from None
    changed = False
    for doc in docs:
        if not isinstance(doc, dict):
            raise BundleError(f"{rel}: a document is not a mapping")
        kind, api = doc.get("kind"), doc.get("apiVersion")
        name = (doc.get("metadata") or {}).get("name")
        if kind == "OCIRepository" and api == SOURCE_API and name in inputs.charts:
            _pin_source(doc, inputs.charts[name], inputs)
            sources.add(name)
            changed = True
        elif kind == "OCIRepository" and api == SOURCE_API and "/charts/" in str(
                (doc.get("spec") or {}).get("url", "")):
            raise BundleError(f"{rel}: OCIRepository {name!r} is a chart source, but no chart "
                              f"{name!r} is published in this release")
        elif kind == "HelmRelease":
            if api != HELM_API:
                raise BundleError(f"{rel}: HelmRelease {name!r} uses {api}, expected {HELM_API}")
            releases.append((rel, str(name), _chart_source(rel, doc)))
            changed |= _follow_profile(doc, str(name), inputs.values_profile)
    if not changed:
        return data
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False).encode()


def _pin_source(doc: dict[str, Any], chart: ChartPin, inputs: BundleInputs) -> None:
    spec = doc.setdefault("spec", {})
    spec["url"] = f"oci://{inputs.registry}/{inputs.charts_repository}/{chart.name}"
    spec["ref"] = {"tag": chart.tag, "digest": str(chart.digest)}
    if inputs.plain_http:
        spec["insecure"] = True
    else:
        spec.pop("insecure", None)


def _chart_source(rel: str, doc: dict[str, Any]) -> str:
    ref = (doc.get("spec") or {}).get("chartRef") or {}
    if ref.get("kind") != "OCIRepository" or not ref.get("name"):
        raise BundleError(f"{rel}: HelmRelease must use chartRef to an OCIRepository (pinned "
                          "by digest), not spec.chart")
    return str(ref["name"])


def _follow_profile(doc: dict[str, Any], release: str, profile: str) -> bool:
    changed = False
    for entry in (doc.get("spec") or {}).get("valuesFrom") or []:
        if entry.get("kind") == "ConfigMap" and entry.get("name") == f"{release}-values":
            key = f"{release}.{profile}.yaml"
            changed |= entry.get("valuesKey") != key
            entry["valuesKey"] = key
    return changed


def pack_bundle(rendered: RenderedBundle, inputs: BundleInputs) -> PackedBundle:
    """The Flux OCI artifact of ``rendered`` (deterministic)."""
    entries = [FileEntry(path, data=data) for path, data in sorted(rendered.files.items())]
    content = pack_entries(entries, mtime=inputs.epoch)
    config = b"{}"
    manifest = Manifest(
        schema_version=2,
        media_type=OCI_MANIFEST,
        config=Descriptor.of(FLUX_CONFIG_MEDIA_TYPE, config),
        layers=[Descriptor.of(FLUX_CONTENT_MEDIA_TYPE, content)],
        annotations={
            "org.opencontainers.image.created": rfc3339(inputs.epoch),
            "org.opencontainers.image.source": inputs.source,
            "org.opencontainers.image.revision": inputs.revision,
        },
    )
    return PackedBundle(content, config, manifest.to_json())


def push_bundle(store: ContentStore, repository: str, tag: str,
                bundle: PackedBundle) -> PushResult:
    """Push under ``repository:tag`` (immutable: same content no-op, other content refused)."""
    return push_immutable(store, repository, tag, bundle.blobs(), bundle.manifest,
                          OCI_MANIFEST, what="config bundle")
