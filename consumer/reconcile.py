"""Offline reconcile: render exactly what Flux would run for a release, without a cluster.

``reconcile_offline(resolved, site, client_for, workdir)``:

1. builds the install plan (``consumer.plan``): the values of each HelmRelease;
2. pulls the config bundle by digest (its first layer, which Flux applies, must be
   ``application/vnd.cncf.flux.content.v1.tar+gzip``) and every chart of
   ``locks.charts`` by digest (the ``application/vnd.cncf.helm.chart.content.v1.tar+gzip``
   layer, as the bundle's ``layerSelector`` asks), from the registry the release was
   resolved from; every download is verified by the client and extracted with
   ``ocicore.extract.safe_extract`` (no absolute paths, no ``..``, no links, no devices,
   size and entry limits);
3. checks that every ``kustomization.yaml`` of the bundle names only local files (no
   remote bases: an offline render must not fetch anything), then runs ``kubectl
   kustomize`` on the parent's ``./base`` and on every stage that a Flux
   ``Kustomization`` with ``sourceRef`` ``appliance-config`` applies;
4. for each ``HelmRelease`` (in stage order): the chart is the one its
   ``chartRef`` OCIRepository names (matched to ``locks.charts`` by name; the
   OCIRepository's ``ref.digest`` must equal the lock), the values are its ``valuesFrom``
   sources from the plan then its inline ``spec.values``; ``helm template`` renders it
   (hooks included) into the release name and namespace Flux would use;
5. lists every container image (``containers``, ``initContainers``,
   ``ephemeralContainers`` wherever they appear: Pods and the Pod templates of
   Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, …) and refuses any that is
   not exactly one the release pins (``repo:tag@digest`` or ``repo@digest`` of a
   ``locks.images`` entry, located, or the control-plane reference).

Everything is built in a temporary directory next to ``workdir`` and renamed to
``workdir`` only when all of it passed, so on any failure ``workdir`` is not written.
Layout: ``bundle/``, ``charts/<chart>/``, ``values/<release>.<n>.yaml``,
``manifests/00-bundle.yaml`` (the bundle's objects), ``manifests/NN-<release>.yaml``,
``images.txt``.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from consumer.plan import (
    CONFIG_SOURCE,
    FLUX_NAMESPACE,
    ConfigMap,
    ImagePins,
    InstallPlan,
    Secret,
    dump_yaml,
    object_key,
    plan_install,
)
from consumer.resolve import ResolvedRelease
from consumer.site import SiteSettings
from consumer.tools import Helm, Kubectl
from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.errors import InvalidInputError, InvalidReferenceError
from ocicore.extract import DEFAULT_LIMITS, ArchiveError, ExtractLimits, safe_extract
from ocicore.models import Manifest
from ocicore.reference import Reference

FLUX_CONTENT_MEDIA_TYPE = "application/vnd.cncf.flux.content.v1.tar+gzip"
HELM_CHART_MEDIA_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
_KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_KUSTOMIZE_REFERENCES = ("resources", "components", "bases", "crds")
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_REPUBLISH = "the release's artifacts are inconsistent; re-publish the release"

ClientFor = Callable[[str], RegistryClient]


class ReconcileError(InvalidInputError):
    """The bundle or a chart cannot be rendered as Flux would (names what and where)."""


class UnpinnedImageError(InvalidInputError):
    """The rendered workloads use an image the release does not pin."""

    def __init__(self, message: str, *, hint: str = "", images: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.images = images or []


@dataclass(frozen=True)
class OfflineRender:
    """The result of ``reconcile_offline``.

    ``flux_objects``: the bundle's objects (``kubectl kustomize`` of the parent path and
    every stage); ``manifests``: every object ``helm template`` rendered, in stage order;
    ``images``: every container image of ``manifests`` (sorted, each once), all pinned;
    ``releases``: the HelmReleases rendered, in order; ``directory``: where it was written.
    """

    directory: Path
    flux_objects: list[dict[str, Any]]
    manifests: list[dict[str, Any]]
    images: list[str]
    releases: list[str]


def reconcile_offline(
    resolved: ResolvedRelease,
    site: SiteSettings,
    client_for: ClientFor,
    workdir: Path,
    *,
    helm: Helm | None = None,
    kubectl: Kubectl | None = None,
    limits: ExtractLimits = DEFAULT_LIMITS,
) -> OfflineRender:
    """Render release ``resolved`` for ``site`` as Flux would, into ``workdir``.

    ``client_for(host)`` gives the registry client of a host (``ocicore.pool.ClientPool``).
    ``workdir`` must not exist or be empty. Raises ``PlanError``/``SiteError`` (the
    plan), ``RegistryError``/``IntegrityError`` (downloads), ``UnsafeArchiveError``/
    ``MalformedArchiveError`` (the bundle or a chart), ``ReconcileError`` (content that
    does not fit together), ``ToolMissingError``/``ToolFailedError`` (kubectl, helm),
    ``UnpinnedImageError``; on any of them ``workdir`` is left as it was.
    """
    workdir = Path(workdir)
    if workdir.is_symlink() or (workdir.exists() and not workdir.is_dir()):
        raise ReconcileError(f"cannot write into {workdir}: it exists and is not a directory",
                             hint="pass a new directory")
    if workdir.is_dir() and any(workdir.iterdir()):
        raise ReconcileError(f"cannot write into {workdir}: it is not empty",
                             hint="pass an empty or new directory")
    plan = plan_install(resolved, site)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{workdir.name}.partial-", dir=workdir.parent))
    try:
        job = _Reconcile(resolved, plan, client_for, staging, helm or Helm(),
                         kubectl or Kubectl(), limits)
        flux_objects, manifests, images, releases = job.run()
        staging.chmod(0o755)
        if workdir.is_dir():
            workdir.rmdir()
        os.replace(staging, workdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OfflineRender(workdir, flux_objects, manifests, images, releases)


class _Reconcile:
    def __init__(self, resolved: ResolvedRelease, plan: InstallPlan, client_for: ClientFor,
                 root: Path, helm: Helm, kubectl: Kubectl, limits: ExtractLimits) -> None:
        self.resolved = resolved
        self.manifest = resolved.manifest
        self.plan = plan
        self.client_for = client_for
        self.root = root
        self.helm = helm
        self.kubectl = kubectl
        self.limits = limits

    def run(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], list[str]]:
        bundle = self._pull_bundle()
        charts = self._pull_charts()
        check_local_kustomizations(bundle)
        built = self._kustomize(bundle)
        flux_objects = [doc for _, docs in built for doc in docs]
        out = self.root / "manifests"
        out.mkdir()
        (out / "00-bundle.yaml").write_text(_stream(flux_objects), encoding="utf-8")
        (self.root / "values").mkdir()
        manifests: list[dict[str, Any]] = []
        releases: list[str] = []
        sources = {object_key(d): d for d in flux_objects if d.get("kind") == "OCIRepository"}
        helmreleases = _apply_order(built)
        for index, release in enumerate(helmreleases, start=1):
            name, docs = self._template(release, sources, charts)
            (out / f"{index:02d}-{name}.yaml").write_text(_stream(docs), encoding="utf-8")
            manifests += docs
            releases.append(name)
        images = self._check_images(manifests)
        (self.root / "images.txt").write_text("".join(f"{i}\n" for i in images), encoding="utf-8")
        return flux_objects, manifests, images, releases

    # -- pulling -------------------------------------------------------------------

    def _pull_bundle(self) -> Path:
        config = self.manifest.config
        ref = self.resolved.locate(config.repository).with_digest(Digest.parse(config.digest))
        dest = self.root / "bundle"
        self._pull(ref, dest, f"config bundle {ref}", FLUX_CONTENT_MEDIA_TYPE, first_layer=True)
        return dest

    def _pull_charts(self) -> dict[str, tuple[Digest, Path]]:
        locks = (self.manifest.locks.charts if self.manifest.locks else None) or {}
        if not locks:
            raise ReconcileError(f"release {self.manifest.version} has no locks.charts",
                                 hint="only releases that lock their charts can be rendered")
        (self.root / "charts").mkdir()
        charts = {}
        for name, lock in sorted(locks.items()):
            digest = Digest.parse(lock.digest)
            ref = self.resolved.locate(lock.ref).with_tag(None).with_digest(digest)
            dest = self.root / "charts" / name
            what = f"chart {name} ({ref})"
            self._pull(ref, dest, what, HELM_CHART_MEDIA_TYPE, first_layer=False)
            charts[name] = (digest, _chart_dir(dest, name, what))
        return charts

    def _pull(self, ref: Reference, dest: Path, what: str, media_type: str, *,
              first_layer: bool) -> None:
        assert ref.digest is not None
        client = self.client_for(ref.registry)
        parsed = client.get_manifest(ref.repository, ref.digest).parse()
        if not isinstance(parsed, Manifest) or not parsed.layers:
            raise ReconcileError(f"{what} is not an artifact with layers", hint=_REPUBLISH)
        if first_layer:
            layers = parsed.layers[:1] if parsed.layers[0].media_type == media_type else []
        else:
            layers = [d for d in parsed.layers if d.media_type == media_type]
        if len(layers) != 1:
            raise ReconcileError(f"{what} has no single layer of type {media_type}"
                                 + (" first" if first_layer else ""), hint=_REPUBLISH)
        archive = dest.parent / f".{dest.name}.layer"
        client.fetch_blob(ref.repository, layers[0], archive)
        try:
            with archive.open("rb") as stream:
                safe_extract(stream, dest, limits=self.limits)
        except ArchiveError as exc:
            raise type(exc)(f"{what}: {exc.message}", hint=exc.hint, member=exc.member) from None
        finally:
            archive.unlink(missing_ok=True)

    # -- kustomize -----------------------------------------------------------------

    def _kustomize(self, bundle: Path) -> list[tuple[str, list[dict[str, Any]]]]:
        """(path, objects) for the parent's path and every stage it applies, in turn."""
        parent = self.plan.find("Kustomization", FLUX_NAMESPACE, "appliance")
        start = parent.to_dict()["spec"]["path"] if parent is not None else "./base"
        pending = [_bundle_path(start, "the install plan's Kustomization")]
        built: list[tuple[str, list[dict[str, Any]]]] = []
        while pending:
            path = pending.pop(0)
            if any(done == path for done, _ in built):
                continue
            directory = bundle / path
            if not directory.is_dir():
                raise ReconcileError(f"config bundle: path ./{path} does not exist",
                                     hint=_REPUBLISH)
            docs = _documents(self.kubectl.kustomize(directory), f"kubectl kustomize ./{path}")
            built.append((path, docs))
            for doc in docs:
                stage = _stage_path(doc)
                if stage is not None:
                    pending.append(_bundle_path(stage, object_key(doc)))
        return built

    # -- helm ----------------------------------------------------------------------

    def _template(self, release: dict[str, Any], sources: dict[str, dict[str, Any]],
                  charts: dict[str, tuple[Digest, Path]]) -> tuple[str, list[dict[str, Any]]]:
        meta = release.get("metadata") or {}
        spec = release.get("spec") or {}
        key = object_key(release)
        namespace = meta.get("namespace")
        if not namespace:
            raise ReconcileError(f"{key} has no metadata.namespace", hint=_REPUBLISH)
        chart_dir = self._chart_for(key, namespace, spec, sources, charts)
        target = spec.get("targetNamespace") or namespace
        name = spec.get("releaseName") or (
            f"{target}-{meta['name']}" if spec.get("targetNamespace") else meta["name"])
        values = self._values_files(key, namespace, spec)
        output = self.helm.template(chart_dir, name, target, values=values)
        return name, _documents(output, f"helm template of {key}")

    def _chart_for(self, key: str, namespace: str, spec: dict[str, Any],
                   sources: dict[str, dict[str, Any]],
                   charts: dict[str, tuple[Digest, Path]]) -> Path:
        ref = spec.get("chartRef") or {}
        if ref.get("kind") != "OCIRepository" or not ref.get("name"):
            raise ReconcileError(f"{key} does not use chartRef to an OCIRepository",
                                 hint="the bundle must pin every chart by digest")
        source_key = f"OCIRepository/{ref.get('namespace') or namespace}/{ref['name']}"
        source = sources.get(source_key)
        if source is None:
            raise ReconcileError(f"{key} points at {source_key}, which the bundle does not "
                                 "define", hint=_REPUBLISH)
        chart = source["metadata"]["name"]
        if chart not in charts:
            raise ReconcileError(f"{source_key} names chart {chart!r}, which the release does "
                                 "not lock", hint=_REPUBLISH)
        locked, chart_dir = charts[chart]
        pinned = ((source.get("spec") or {}).get("ref") or {}).get("digest")
        if pinned != str(locked):
            raise ReconcileError(f"{source_key} pins {pinned or 'no digest'}, the release locks "
                                 f"chart {chart} at {locked}", hint=_REPUBLISH)
        return chart_dir

    def _values_files(self, key: str, namespace: str, spec: dict[str, Any]) -> list[Path]:
        name = key.rsplit("/", 1)[1]
        texts: list[str] = []
        for entry in spec.get("valuesFrom") or []:
            kind, source = entry.get("kind"), entry.get("name")
            value_key = entry.get("valuesKey") or "values.yaml"
            if entry.get("targetPath"):
                raise ReconcileError(f"{key}: valuesFrom targetPath is not supported offline",
                                     hint="use a values key holding a whole values document")
            obj = self.plan.find(str(kind), namespace, str(source))
            data: dict[str, str] = {}
            if isinstance(obj, ConfigMap):
                data = dict(obj.data)
            elif isinstance(obj, Secret):
                data = dict(obj.string_data)
            if value_key in data:
                texts.append(data[value_key])
            elif not entry.get("optional"):
                raise ReconcileError(f"{key} reads {kind} {namespace}/{source} key {value_key}, "
                                     "which the install plan does not create", hint=_REPUBLISH)
        if spec.get("values"):
            texts.append(dump_yaml(spec["values"]))
        files = []
        for index, text in enumerate(texts):
            path = self.root / "values" / f"{name}.{index}.yaml"
            path.write_text(text, encoding="utf-8")
            files.append(path)
        return files

    # -- images --------------------------------------------------------------------

    def _check_images(self, manifests: list[dict[str, Any]]) -> list[str]:
        pinned = {_normal(ref) for ref in ImagePins.of(self.resolved).pinned_references()}
        control_plane = self.manifest.control_plane
        if control_plane and "@" in control_plane:
            located = self.resolved.locate(control_plane)
            pinned |= {_normal(str(located)), _normal(located.with_tag(None).pinned())}
        found: dict[str, str] = {}
        for doc in manifests:
            for image in container_images(doc):
                found.setdefault(image, object_key(doc))
        bad = [f"{image} (in {where})" for image, where in sorted(found.items())
               if _normal(image) not in pinned]
        if bad:
            raise UnpinnedImageError(
                f"release {self.manifest.version} renders images it does not pin: "
                + ", ".join(bad),
                hint="every image must be a locks.images entry as repo:tag@digest or "
                "repo@digest; fix the chart or its values and re-publish",
                images=[b.split(" ")[0] for b in bad])
        return sorted(found)


def container_images(doc: Any) -> Iterator[str]:
    """The ``image`` of every container, init and ephemeral container anywhere in ``doc``
    (``<no image>`` for a container without one)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in _CONTAINER_LISTS and isinstance(value, list):
                for container in value:
                    if isinstance(container, dict):
                        yield str(container.get("image") or "<no image>")
            else:
                yield from container_images(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from container_images(item)


def check_local_kustomizations(bundle: Path) -> None:
    """Refuse a ``kustomization.yaml`` that names anything but a file or folder inside
    ``bundle`` (remote bases, absolute paths, ``..`` out of the bundle)."""
    root = bundle.resolve()
    for path in sorted(p for p in bundle.rglob("*") if p.name in _KUSTOMIZATION_FILES):
        rel = path.relative_to(bundle).as_posix()
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ReconcileError(f"config bundle: {rel} is not valid YAML: "
                                 f"{str(exc).splitlines()[0]}", hint=_REPUBLISH) from None
        if not isinstance(doc, dict):
            raise ReconcileError(f"config bundle: {rel} is not a mapping", hint=_REPUBLISH)
        for field in _KUSTOMIZE_REFERENCES:
            for entry in doc.get(field) or []:
                target = (path.parent / str(entry)).resolve()
                if ("://" in str(entry) or str(entry).startswith(("/", "git@"))
                        or not target.is_relative_to(root) or not target.exists()):
                    raise ReconcileError(
                        f"config bundle: {rel}: {field} entry {entry!r} is not a file or "
                        "folder of the bundle", hint="an offline render fetches nothing; "
                        "the bundle must be self-contained")


def _apply_order(built: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """The HelmReleases in the order Flux reaches them: stage by stage (the stage
    Kustomizations ordered by ``dependsOn``), and within a stage by ``dependsOn``;
    ties by name."""
    stages: dict[str, tuple[str, dict[str, Any]]] = {}
    for _, docs in built:
        for doc in docs:
            path = _stage_path(doc)
            if path is not None:
                stages[doc["metadata"]["name"]] = (_bundle_path(path, object_key(doc)), doc)
    order = _by_dependencies({n: doc for n, (_, doc) in stages.items()}, "stage Kustomizations")
    stage_rank = {stages[name][0]: rank for rank, name in enumerate(order, start=1)}
    groups: dict[int, dict[str, dict[str, Any]]] = {}
    for path, docs in built:
        rank = stage_rank.get(path, 0)
        for doc in docs:
            if doc.get("kind") == "HelmRelease":
                groups.setdefault(rank, {})[object_key(doc)] = doc
    ordered = []
    for rank in sorted(groups):
        group = groups[rank]
        names = {doc["metadata"]["name"]: doc for doc in group.values()}
        ordered += [names[n] for n in _by_dependencies(names, "HelmReleases")]
    return ordered


def _by_dependencies(objects: dict[str, dict[str, Any]], what: str) -> list[str]:
    """Names of ``objects`` with each after what its ``spec.dependsOn`` names (among
    ``objects``); ties by name. Raises ``ReconcileError`` on a cycle."""
    needs = {name: {str(d.get("name")) for d in (doc.get("spec") or {}).get("dependsOn") or []
                    if isinstance(d, dict)} & set(objects)
             for name, doc in objects.items()}
    ordered: list[str] = []
    while needs:
        ready = sorted(name for name, deps in needs.items() if not deps - set(ordered))
        if not ready:
            raise ReconcileError(f"config bundle: the dependsOn of the {what} "
                                 f"{', '.join(sorted(needs))} form a cycle", hint=_REPUBLISH)
        ordered.append(ready[0])
        del needs[ready[0]]
    return ordered


def _stage_path(doc: dict[str, Any]) -> str | None:
    """``spec.path`` of a Flux Kustomization that applies part of the config bundle."""
    if doc.get("kind") != "Kustomization" or not str(doc.get("apiVersion", "")).startswith(
            "kustomize.toolkit.fluxcd.io/"):
        return None
    spec = doc.get("spec") or {}
    source = spec.get("sourceRef") or {}
    namespace = source.get("namespace") or (doc.get("metadata") or {}).get("namespace")
    if (source.get("kind") != "OCIRepository" or source.get("name") != CONFIG_SOURCE
            or namespace != FLUX_NAMESPACE):
        return None
    return str(spec.get("path") or "./")


def _bundle_path(path: str, where: str) -> str:
    normal = posixpath.normpath(path.strip())
    if path.strip().startswith("/") or normal == ".." or normal.startswith("../"):
        raise ReconcileError(f"{where}: path {path!r} leaves the config bundle",
                             hint=_REPUBLISH)
    return "" if normal == "." else normal


def _chart_dir(extracted: Path, name: str, what: str) -> Path:
    chart_dir = extracted / name
    if not (chart_dir / "Chart.yaml").is_file():
        raise ReconcileError(f"{what}: the archive has no {name}/Chart.yaml",
                             hint="a chart archive holds one folder named after the chart")
    try:
        meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        meta = None
    if not isinstance(meta, dict) or meta.get("name") != name:
        raise ReconcileError(f"{what}: Chart.yaml does not name the chart {name!r}",
                             hint=_REPUBLISH)
    return chart_dir


def _documents(text: str, what: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ReconcileError(f"{what} printed invalid YAML: {str(exc).splitlines()[0]}"
                             ) from None
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("kind"):
            raise ReconcileError(f"{what} printed a document that is not an object")
    return docs


def _normal(image: str) -> str:
    try:
        return str(Reference.parse(image, default_tag=None))
    except InvalidReferenceError:
        return f"<invalid> {image}"


def _stream(docs: list[dict[str, Any]]) -> str:
    return "".join(f"---\n{dump_yaml(doc)}" for doc in docs)
