"""Helm charts as OCI artifacts, packed deterministically (DESIGN.md §2, §4).

``helm package`` stamps the current time on every file, so we pack the chart folder
ourselves (``ocicore.tarpack``: sorted, fixed mtime, uid/gid 0, normalised modes) with
the chart's name as the archive root, honouring ``.helmignore``. The artifact is what
``helm push`` writes: config = Chart.yaml as JSON (``application/vnd.cncf.helm.config.v1+json``),
one content layer, annotations ``org.opencontainers.image.title/version/description/created``;
tag = chart version with ``+`` written ``_``. ``helm pull oci://…`` accepts it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import semver
import yaml

from consumer.tools import Helm
from ocicore.digest import Digest
from ocicore.errors import InvalidInputError
from ocicore.fsutil import rfc3339
from ocicore.jsonutil import canonical_json
from ocicore.models import OCI_MANIFEST, Descriptor, Manifest
from ocicore.store import ContentStore
from ocicore.tarpack import pack_tree
from publisher.push import PushResult, push_immutable

HELM_CONFIG_MEDIA_TYPE = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_MEDIA_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
_NAME_RULE = "lowercase letters, digits and '-', starting and ending with a letter or digit"


class ChartError(InvalidInputError):
    """A chart folder or its Chart.yaml is invalid."""


@dataclass(frozen=True)
class PackedChart:
    """A chart packed into the bytes of its OCI artifact."""

    name: str
    version: str
    content: bytes
    config: bytes
    manifest: bytes

    @property
    def tag(self) -> str:
        return self.version.replace("+", "_")

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest)

    def blobs(self) -> list[tuple[bytes | Path, Descriptor]]:
        return [(self.config, Descriptor.of(HELM_CONFIG_MEDIA_TYPE, self.config)),
                (self.content, Descriptor.of(HELM_CHART_MEDIA_TYPE, self.content))]


def load_chart_metadata(chart_dir: Path) -> dict[str, Any]:
    """Chart.yaml of ``chart_dir``, validated: apiVersion v2, name = folder name, SemVer
    version. Raises ``ChartError`` naming the field and the rule."""
    path = chart_dir / "Chart.yaml"
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ChartError(
            f"{chart_dir} has no Chart.yaml",
            hint="a chart folder needs Chart.yaml, values.yaml and templates/",
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ChartError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(meta, dict):
        raise ChartError(f"{path} is not a YAML mapping")
    where = f"{chart_dir.name}/Chart.yaml"
    if meta.get("apiVersion") != "v2":
        raise ChartError(f"{where}: apiVersion must be v2, got {meta.get('apiVersion')!r}",
                         hint="Helm 3 charts use apiVersion: v2")
    name = meta.get("name")
    if name != chart_dir.name:
        raise ChartError(f"{where}: name {name!r} must equal the folder name "
                         f"{chart_dir.name!r}")
    if not isinstance(name, str) or not _dns_label(name):
        raise ChartError(f"{where}: name {name!r} must be {_NAME_RULE}")
    version = meta.get("version")
    if not isinstance(version, str):
        raise ChartError(f"{where}: version must be a string, got {version!r}",
                         hint='quote it: version: "1.0.0"')
    try:
        semver.Version.parse(version)
    except ValueError:
        raise ChartError(f"{where}: version {version!r} is not SemVer 2 (MAJOR.MINOR.PATCH)"
                         ) from None
    return meta


def _dns_label(name: str) -> bool:
    return re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) is not None and len(name) <= 53


def helmignore(chart_dir: Path) -> Callable[[str], bool]:
    """The exclusion predicate of ``chart_dir/.helmignore`` (helm's rules: ``#`` comments,
    ``!`` negation, a trailing ``/`` matches directories only, a pattern without ``/``
    matches the base name, one with ``/`` the whole relative path)."""
    rules: list[tuple[bool, bool, str]] = []
    path = chart_dir / ".helmignore"
    if path.is_file():
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            line = line.removeprefix("!")
            dir_only = line.endswith("/")
            rules.append((negate, dir_only, line.strip("/")))

    def exclude(rel: str) -> bool:
        is_dir = (chart_dir / rel).is_dir()
        for negate, dir_only, pattern in rules:
            if dir_only and not is_dir:
                continue
            target = rel if "/" in pattern else rel.rsplit("/", 1)[-1]
            if fnmatch.fnmatchcase(target, pattern):
                return not negate
        return False

    return exclude


def pack_chart(chart_dir: Path, *, epoch: int) -> PackedChart:
    """Pack ``chart_dir`` deterministically; raises ``ChartError`` for an invalid chart."""
    meta = load_chart_metadata(chart_dir)
    name, version = meta["name"], meta["version"]
    content = pack_tree(chart_dir, prefix=name, exclude=helmignore(chart_dir), mtime=epoch)
    config = canonical_json(meta)
    annotations = {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": rfc3339(epoch),
    }
    if isinstance(meta.get("description"), str):
        annotations["org.opencontainers.image.description"] = meta["description"]
    manifest = Manifest(
        schema_version=2,
        media_type=OCI_MANIFEST,
        config=Descriptor.of(HELM_CONFIG_MEDIA_TYPE, config),
        layers=[Descriptor.of(HELM_CHART_MEDIA_TYPE, content)],
        annotations=annotations,
    )
    return PackedChart(name, version, content, config, manifest.to_json())


def lint_chart(helm: Helm, chart_dir: Path) -> None:
    """``helm lint --strict`` with the chart's ``ci/lint-values.yaml`` when it has one."""
    lint_values = chart_dir / "ci" / "lint-values.yaml"
    helm.lint(chart_dir, [lint_values] if lint_values.is_file() else [])


def push_chart(store: ContentStore, charts_repository: str, chart: PackedChart) -> PushResult:
    """Push under ``<charts_repository>/<name>:<tag>``; identical content is a no-op,
    different content under an existing version is refused."""
    return push_immutable(store, f"{charts_repository}/{chart.name}", chart.tag, chart.blobs(),
                          chart.manifest, OCI_MANIFEST, what=f"chart {chart.name}")
