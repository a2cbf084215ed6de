"""The install plan: the Kubernetes objects that make an appliance run a release, as data.

``plan_install(resolved, site)`` returns an ``InstallPlan`` whose ``objects`` are in
dependency order (``apply`` sends them in this order):

1. ``Namespace`` ``flux-system``, ``alga``, ``appliance-system`` (``alga`` and
   ``appliance-system`` with the labels ``flux/base`` and ``control_plane/deploy`` give them);
2. ``Secret`` ``flux-system/appliance-config-cosign`` (key ``cosign.pub``) when the site
   gives a cosign key, ``Secret`` ``alga/alga-initial-tenant`` when it gives a tenant;
3. one ``ConfigMap`` ``alga/<release>-values`` per HelmRelease (key
   ``<release>.<valuesProfile>.yaml``), then ``ConfigMap`` ``appliance-system/appliance-release``
   (the release selection);
4. ``OCIRepository`` ``flux-system/appliance-config``: the config bundle by digest;
5. ``Kustomization`` ``flux-system/appliance``: applies ``./base`` of the bundle.

Values (``flux/README.md``): the profile's values file of each HelmRelease, with every
``image`` mapping (at any depth, a mapping with ``repository`` under a key ``image``)
pinned to the release's lock for the same repository path (registry rewritten to the
registry the release was resolved from, ``tag`` from ``images``, ``digest`` from
``locks.images``), and every ``*.example.invalid`` placeholder replaced by its site
setting. An image no lock pins, or a placeholder no setting fills, is a ``PlanError``.

Every reference the plan emits goes through ``ResolvedRelease.locate``, so a mirrored
release installs from the mirror.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from consumer.resolve import ResolvedRelease
from consumer.site import SiteError, SiteSettings
from ocicore.errors import InvalidInputError, InvalidReferenceError
from ocicore.reference import Reference

FIELD_MANAGER = "appliance-release"
FLUX_NAMESPACE = "flux-system"
APP_NAMESPACE = "alga"
SYSTEM_NAMESPACE = "appliance-system"
CONFIG_SOURCE = "appliance-config"
COSIGN_SECRET = "appliance-config-cosign"  # noqa: S105 - an object name
PARENT_KUSTOMIZATION = "appliance"
RELEASE_CONFIGMAP = "appliance-release"
TENANT_SECRET = "alga-initial-tenant"  # noqa: S105 - an object name
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"

#: Labels on every object the plan owns (not on the Namespaces, which others declare too).
MANAGED_LABELS: Mapping[str, str] = {
    "app.kubernetes.io/managed-by": FIELD_MANAGER,
    "app.kubernetes.io/part-of": "alga-appliance",
}
_RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
_NAMESPACE_LABELS: Mapping[str, Mapping[str, str]] = {
    FLUX_NAMESPACE: {},
    APP_NAMESPACE: {"app.kubernetes.io/part-of": "alga-appliance", **_RESTRICTED},
    SYSTEM_NAMESPACE: _RESTRICTED,
}
# A ConfigMap holds at most 1 MiB; keep room for metadata.
_MAX_CONFIGMAP_BYTES = 1_000_000
_RELEASE_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,51}[a-z0-9])?")  # helm: 53 characters
_EMAIL_PLACEHOLDER = re.compile(r"[^@\s]+@app\.example\.invalid")
#: Host placeholders of the values files and the site setting that fills each.
HOST_PLACEHOLDERS: Mapping[str, str] = {
    "app.example.invalid": "hostname",
    "db.example.invalid": "databaseHost",
    "smtp.example.invalid": "smtpHost",
}


class PlanError(InvalidInputError):
    """The release cannot be turned into an install plan (values, pins, sizes)."""


# -- the objects -----------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name}
        if self.namespace is not None:
            meta["namespace"] = self.namespace
        if self.labels:
            meta["labels"] = dict(self.labels)
        return meta


@dataclass(frozen=True)
class KubeObject:
    """Base of the plan's objects: ``apiVersion``, ``kind`` and ``metadata``."""

    api_version: ClassVar[str]
    kind: ClassVar[str]
    metadata: ObjectMeta

    @property
    def key(self) -> str:
        """``Kind/namespace/name`` (``Kind/name`` when cluster-scoped)."""
        return object_key(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind,
                "metadata": self.metadata.to_dict(), **self._body()}

    def _body(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Namespace(KubeObject):
    api_version: ClassVar[str] = "v1"
    kind: ClassVar[str] = "Namespace"


@dataclass(frozen=True)
class ConfigMap(KubeObject):
    api_version: ClassVar[str] = "v1"
    kind: ClassVar[str] = "ConfigMap"
    data: Mapping[str, str] = field(default_factory=dict)

    def _body(self) -> dict[str, Any]:
        return {"data": dict(self.data)}


@dataclass(frozen=True)
class Secret(KubeObject):
    api_version: ClassVar[str] = "v1"
    kind: ClassVar[str] = "Secret"
    string_data: Mapping[str, str] = field(default_factory=dict, repr=False)

    def _body(self) -> dict[str, Any]:
        return {"type": "Opaque", "stringData": dict(self.string_data)}


@dataclass(frozen=True)
class OCIRepositorySpec:
    url: str
    digest: str
    interval: str
    insecure: bool = False
    verify_secret: str | None = None

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"interval": self.interval, "url": self.url,
                                "ref": {"digest": self.digest}}
        if self.insecure:
            spec["insecure"] = True
        if self.verify_secret is not None:
            spec["verify"] = {"provider": "cosign", "secretRef": {"name": self.verify_secret}}
        return spec


@dataclass(frozen=True)
class OCIRepository(KubeObject):
    api_version: ClassVar[str] = SOURCE_API
    kind: ClassVar[str] = "OCIRepository"
    spec: OCIRepositorySpec = field(kw_only=True)

    def _body(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict()}


@dataclass(frozen=True)
class KustomizationSpec:
    path: str
    source: str
    interval: str
    timeout: str
    prune: bool = True
    wait: bool = False
    #: Strategic-merge patches Flux applies to the bundle's objects (``spec.patches``).
    patches: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        spec = {"interval": self.interval, "timeout": self.timeout, "path": self.path,
                "prune": self.prune, "wait": self.wait,
                "sourceRef": {"kind": "OCIRepository", "name": self.source}}
        if self.patches:
            spec["patches"] = list(self.patches)
        return spec


@dataclass(frozen=True)
class Kustomization(KubeObject):
    api_version: ClassVar[str] = KUSTOMIZE_API
    kind: ClassVar[str] = "Kustomization"
    spec: KustomizationSpec = field(kw_only=True)

    def _body(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict()}


@dataclass(frozen=True)
class InstallPlan:
    """The objects of one install, in dependency order, and what they install."""

    version: str
    digest: str
    values_profile: str
    objects: tuple[KubeObject, ...]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [obj.to_dict() for obj in self.objects]

    def find(self, kind: str, namespace: str | None, name: str) -> KubeObject | None:
        for obj in self.objects:
            meta = obj.metadata
            if obj.kind == kind and meta.namespace == namespace and meta.name == name:
                return obj
        return None

    @property
    def values(self) -> dict[str, str]:
        """HelmRelease name → its values YAML (what its ConfigMap holds)."""
        key_suffix = f".{self.values_profile}.yaml"
        found = {}
        for obj in self.objects:
            if isinstance(obj, ConfigMap) and obj.metadata.name.endswith("-values"):
                release = obj.metadata.name.removesuffix("-values")
                found[release] = obj.data[release + key_suffix]
        return found


def object_key(doc: Mapping[str, Any]) -> str:
    """``Kind/namespace/name`` of a Kubernetes object as a dict (``Kind/name`` without
    a namespace)."""
    meta = doc.get("metadata") or {}
    namespace = meta.get("namespace")
    name = meta.get("name")
    return f"{doc.get('kind')}/{namespace}/{name}" if namespace else f"{doc.get('kind')}/{name}"


def dump_yaml(data: Any) -> str:
    """Deterministic YAML: sorted keys, block style, multi-line strings as ``|`` blocks."""
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True, width=1 << 30)  # never fold a line


class _BlockDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


# -- building the plan -----------------------------------------------------------------


def plan_install(resolved: ResolvedRelease, site: SiteSettings) -> InstallPlan:
    """The objects that install ``resolved`` on ``site``, in dependency order.

    Raises ``PlanError`` (an image the release does not pin, values that are not a
    YAML mapping, a release without values for its profile, a ConfigMap over 1 MiB)
    and ``SiteError`` (a placeholder the values use whose site setting is missing).
    """
    manifest = resolved.manifest
    labels = dict(MANAGED_LABELS)
    objects: list[KubeObject] = [
        Namespace(ObjectMeta(ns, labels=_NAMESPACE_LABELS[ns]))
        for ns in (FLUX_NAMESPACE, APP_NAMESPACE, SYSTEM_NAMESPACE)
    ]
    if site.cosign_public_key is not None:
        objects.append(Secret(ObjectMeta(COSIGN_SECRET, FLUX_NAMESPACE, labels),
                              string_data={"cosign.pub": site.cosign_public_key}))
    if site.tenant is not None:
        objects.append(Secret(ObjectMeta(TENANT_SECRET, APP_NAMESPACE, labels), string_data={
            "tenantName": site.tenant.name,
            "adminEmail": site.tenant.admin_email,
            "adminPassword": site.tenant.admin_password,
        }))
    pins = ImagePins.of(resolved)
    for release, key, text in _profile_values(resolved):
        values = render_values(release, text, pins, site)
        objects.append(_configmap(ObjectMeta(f"{release}-values", APP_NAMESPACE, labels),
                                  {key: values}))
    objects.append(_configmap(ObjectMeta(RELEASE_CONFIGMAP, SYSTEM_NAMESPACE, labels),
                              _release_selection(resolved)))
    bundle = resolved.locate(manifest.config.repository)
    objects.append(OCIRepository(
        ObjectMeta(CONFIG_SOURCE, FLUX_NAMESPACE, labels),
        spec=OCIRepositorySpec(
            url=f"oci://{bundle.registry}/{bundle.repository}",
            digest=manifest.config.digest,
            interval=site.interval,
            insecure=site.plain_http,
            verify_secret=COSIGN_SECRET if site.cosign_public_key is not None else None,
        ),
    ))
    objects.append(Kustomization(
        ObjectMeta(PARENT_KUSTOMIZATION, FLUX_NAMESPACE, labels),
        spec=KustomizationSpec(path="./base", source=CONFIG_SOURCE, interval=site.interval,
                               timeout=site.timeout, patches=_mirror_patches(resolved, site)),
    ))
    return InstallPlan(manifest.version, str(resolved.digest), manifest.values_profile,
                       tuple(objects))


def _mirror_patches(resolved: ResolvedRelease, site: SiteSettings) -> tuple[dict[str, Any], ...]:
    """When the release was resolved from another registry than it was published to (a
    mirror), the bundle's chart sources still name the publish registry: patch each one
    to pull from the mirror, by the same digest (the bundle itself stays untouched)."""
    if resolved.registry == resolved.home_registry:
        return ()
    patches = []
    for name, chart in sorted(((resolved.manifest.locks and resolved.manifest.locks.charts)
                               or {}).items()):
        ref = resolved.locate(chart.ref)
        spec: dict[str, Any] = {"url": f"oci://{ref.registry}/{ref.repository}"}
        if site.plain_http:
            spec["insecure"] = True
        patch = {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
                 "metadata": {"name": name, "namespace": APP_NAMESPACE}, "spec": spec}
        patches.append({"target": {"kind": "OCIRepository", "name": name,
                                   "namespace": APP_NAMESPACE},
                        "patch": dump_yaml(patch)})
    return tuple(patches)


def _profile_values(resolved: ResolvedRelease) -> list[tuple[str, str, str]]:
    """(release, values key, YAML text) for each HelmRelease of the release's profile."""
    manifest = resolved.manifest
    suffix = f".{manifest.values_profile}.yaml"
    found = []
    for key, text in sorted((manifest.profile_values or {}).items()):
        if not key.endswith(suffix):
            continue
        release = key.removesuffix(suffix)
        if not _RELEASE_NAME.fullmatch(release):
            raise PlanError(f"release {manifest.version}: profileValues key {key!r} does not "
                            "start with a valid HelmRelease name",
                            hint="HelmRelease names are lowercase DNS labels")
        found.append((release, key, text))
    found.sort()
    if not found:
        raise PlanError(f"release {manifest.version} has no profileValues for its values "
                        f"profile {manifest.values_profile!r}",
                        hint="the release manifest needs one <release>.<profile>.yaml per "
                        "HelmRelease; re-publish it")
    return found


def _configmap(meta: ObjectMeta, data: dict[str, str]) -> ConfigMap:
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    if size > _MAX_CONFIGMAP_BYTES:
        raise PlanError(f"ConfigMap {meta.namespace}/{meta.name} would hold {size} bytes, over "
                        f"the {_MAX_CONFIGMAP_BYTES}-byte limit of a ConfigMap",
                        hint="shrink the release manifest or its values")
    return ConfigMap(meta, data=data)


def _release_selection(resolved: ResolvedRelease) -> dict[str, str]:
    manifest = resolved.manifest
    control_plane = (str(resolved.locate(manifest.control_plane))
                     if manifest.control_plane else "")
    return {
        "version": manifest.version,
        "channel": resolved.channel or "",
        "digest": str(resolved.digest),
        "sequence": "" if manifest.sequence is None else str(manifest.sequence),
        "repository": f"{resolved.registry}/{resolved.repository}",
        "images": json.dumps(manifest.images.by_key(), sort_keys=True, separators=(",", ":")),
        "controlPlane": control_plane,
        "manifest": resolved.manifest_bytes.decode("utf-8"),
    }


# -- values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePin:
    key: str
    repository: str  # located: registry/path
    tag: str
    digest: str


@dataclass(frozen=True)
class ImagePins:
    """The release's image locks by repository path (registry stripped), located."""

    version: str
    by_path: Mapping[str, ImagePin]

    @classmethod
    def of(cls, resolved: ResolvedRelease) -> ImagePins:
        manifest = resolved.manifest
        tags = manifest.images.by_key()
        locks = (manifest.locks.images if manifest.locks else None) or {}
        by_path: dict[str, ImagePin] = {}
        for key, lock in sorted(locks.items()):
            ref = resolved.locate(lock)
            if key not in tags:
                raise PlanError(f"release {manifest.version}: locks.images.{key} has no tag in "
                                f"images.{key}", hint="re-publish the release with both")
            assert ref.digest is not None  # the manifest grammar requires repo@sha256:…
            pin = ImagePin(key, f"{ref.registry}/{ref.repository}", tags[key], str(ref.digest))
            other = by_path.get(ref.repository)
            if other is not None and (other.tag, other.digest) != (pin.tag, pin.digest):
                raise PlanError(f"release {manifest.version}: images {other.key} and {key} "
                                f"lock the same repository {ref.repository} differently",
                                hint="each repository may be pinned once")
            by_path[ref.repository] = pin
        return cls(manifest.version, by_path)

    def pinned_references(self) -> set[str]:
        """Every image reference the release pins: ``repo:tag@digest`` and ``repo@digest``."""
        refs = set()
        for pin in self.by_path.values():
            refs.add(f"{pin.repository}:{pin.tag}@{pin.digest}")
            refs.add(f"{pin.repository}@{pin.digest}")
        return refs


def render_values(release: str, text: str, pins: ImagePins, site: SiteSettings) -> str:
    """The values YAML of HelmRelease ``release``: images pinned, site settings filled.

    Raises ``PlanError`` and ``SiteError`` (see ``plan_install``)."""
    what = f"values of {release}"
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlanError(f"{what}: not valid YAML: {str(exc).splitlines()[0]}",
                        hint="the release manifest's profileValues are broken; re-publish it"
                        ) from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise PlanError(f"{what}: must be a YAML mapping, not {type(values).__name__}",
                        hint="the release manifest's profileValues are broken; re-publish it")
    filled = _fill(values, "", what, pins, site)
    return dump_yaml(filled)


def _fill(node: Any, path: str, what: str, pins: ImagePins, site: SiteSettings) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            if key == "image" and isinstance(value, dict) and "repository" in value:
                out[key] = _fill(_pin_image(value, child, what, pins), child, what, pins, site)
            else:
                out[key] = _fill(value, child, what, pins, site)
        return out
    if isinstance(node, list):
        return [_fill(v, f"{path}[{i}]", what, pins, site) for i, v in enumerate(node)]
    if isinstance(node, str):
        return _site_value(node, path, what, site)
    return node


def _pin_image(image: dict[str, Any], path: str, what: str, pins: ImagePins) -> dict[str, Any]:
    repository = image["repository"]
    try:
        ref = Reference.parse(str(repository), default_tag=None)
    except InvalidReferenceError:
        raise PlanError(f"{what}: {path}.repository {repository!r} is not an image repository",
                        hint="fix the values file and re-publish the release") from None
    pin = pins.by_path.get(ref.repository)
    if pin is None:
        raise PlanError(f"{what}: image {repository} is not pinned by release {pins.version}",
                        hint="add the image to release.toml [images] so that the release locks "
                        "it, and re-publish")
    return {**image, "repository": pin.repository, "tag": pin.tag, "digest": pin.digest}


def _site_value(value: str, path: str, what: str, site: SiteSettings) -> str:
    if "example.invalid" not in value:
        return value
    if _EMAIL_PLACEHOLDER.fullmatch(value):
        return _setting(site, "smtpFrom", value, path, what)
    for placeholder, setting in HOST_PLACEHOLDERS.items():
        if placeholder in value:
            value = value.replace(placeholder, _setting(site, setting, placeholder, path, what))
    if "example.invalid" in value:
        raise PlanError(f"{what}: {path} holds {value!r}, a placeholder no site setting fills",
                        hint=f"the known placeholders are {', '.join(HOST_PLACEHOLDERS)} and "
                        "<name>@app.example.invalid")
    return value


def _setting(site: SiteSettings, alias: str, placeholder: str, path: str, what: str) -> str:
    name = next(n for n, f in SiteSettings.model_fields.items() if (f.alias or n) == alias)
    value = getattr(site, name)
    if value is None:
        raise SiteError(f"site settings: {alias}: required, because {what} uses it at {path} "
                        f"(placeholder {placeholder})", hint=f"add {alias} to the site settings")
    return str(value)
