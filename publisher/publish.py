"""``publish``: charts → config bundle → control-plane image → release manifest →
signature, in that order (DESIGN.md §4).

No step touches a channel, so a failure anywhere leaves every channel as it was.
Every step checks the registry first and skips identical content, so a re-run after
a failure resumes where it stopped and a second run of an unchanged release uploads
nothing; the release manifest is reused as it is when the version tag already holds
the same release (``created`` and ``sequence`` included), and refused when it holds
another. ``dry_run`` computes every digest without writing anything.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import semver

from consumer.manifest import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    SCHEMA_ID,
    ReleaseManifest,
    manifest_document,
    read_manifest,
    validate_document,
    write_manifest,
)
from consumer.resolve import is_release_artifact
from consumer.signatures import build_payload
from consumer.tools import Helm
from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.errors import InvalidInputError, NotFoundError
from ocicore.fsutil import rfc3339
from ocicore.models import OCI_MANIFEST, Descriptor, Manifest
from publisher.bundle import BundleInputs, ChartPin, pack_bundle, push_bundle, render_bundle
from publisher.charts import lint_chart, pack_chart, push_chart
from publisher.push import ImmutableTagError, push_immutable
from publisher.release_config import ReleaseConfig
from publisher.signing import Signer, append_signature

log = logging.getLogger(__name__)

RELEASE_LAYER_MEDIA_TYPE = "application/vnd.alga.appliance.release.manifest.v1+json"
SEQUENCE_ANNOTATION = "io.alga.appliance.release.sequence"

#: Builds the control-plane image; pushes it to ``store`` under ``repository:tag`` unless
#: ``store`` is None (dry run); returns its manifest (or index) digest.
ControlPlaneBuilder = Callable[[RegistryClient | None, str, str], Digest]


class PublishError(InvalidInputError):
    """The release cannot be published as requested."""


@dataclass(frozen=True)
class PublishRequest:
    config: ReleaseConfig
    root: Path
    registry: str
    version: str
    source_repository: str
    source_revision: str
    signer: Signer
    build_control_plane: ControlPlaneBuilder
    image_tags: Mapping[str, str] = field(default_factory=dict)
    plain_http: bool = False
    epoch: int = 0
    created: datetime | None = None
    channel: str | None = None
    lint: bool = True


@dataclass(frozen=True)
class StepResult:
    step: str
    artifact: str
    reference: str
    digest: str
    outcome: str


@dataclass
class PublishReport:
    version: str
    digest: Digest | None = None
    sequence: int | None = None
    steps: list[StepResult] = field(default_factory=list)


def publish(
    client: RegistryClient,
    request: PublishRequest,
    *,
    dry_run: bool = False,
    on_step: Callable[[StepResult], None] | None = None,
) -> PublishReport:
    """Publish one release; returns what each step did. Raises ``ToolkitError``s naming
    the step (``ChartError``, ``BundleError``, ``ImmutableTagError``, ``PublishError``,
    registry errors)."""
    config, registry = request.config, request.registry
    store = None if dry_run else client
    report = PublishReport(request.version)

    def done(step: str, artifact: str, reference: str, digest: Digest | str,
             outcome: str) -> None:
        result = StepResult(step, artifact, reference, str(digest), outcome)
        report.steps.append(result)
        if on_step is not None:
            on_step(result)

    check_version(request.version)
    # 1. charts
    helm = Helm() if request.lint and config.charts.lint else None
    pins: dict[str, ChartPin] = {}
    for name in config.charts.names:
        chart_dir = request.root / config.charts.path / name
        chart = pack_chart(chart_dir, epoch=request.epoch)
        if helm is not None:
            lint_chart(helm, chart_dir)
        repo = f"{config.charts_repository}/{chart.name}"
        outcome = "planned" if store is None else push_chart(
            store, config.charts_repository, chart).outcome
        pins[name] = ChartPin(chart.name, chart.version, chart.digest)
        done("chart", name, f"{registry}/{repo}:{chart.tag}", chart.digest, outcome)
    # 2. config bundle
    inputs = BundleInputs(
        flux_dir=request.root / config.flux.path, registry=registry,
        charts_repository=config.charts_repository, charts=pins,
        values_profile=config.appliance.values_profile, plain_http=request.plain_http,
        source=request.source_repository, revision=request.source_revision,
        epoch=request.epoch,
    )
    rendered = render_bundle(inputs)
    bundle = pack_bundle(rendered, inputs)
    outcome = "planned" if store is None else push_bundle(
        store, config.config_repository, request.version, bundle).outcome
    done("bundle", "config bundle", f"{registry}/{config.config_repository}:{request.version}",
         bundle.digest, outcome)
    # the same signer signs the bundle, so Flux (verify.provider: cosign) can check it
    bundle_payload = build_payload(f"{registry}/{config.config_repository}", bundle.digest,
                                   version=request.version)
    if store is not None:
        append_signature(store, config.config_repository, bundle.digest, bundle_payload,
                         request.signer.sign(bundle_payload))
    done("signature", "config bundle signature",
         f"{registry}/{config.config_repository}:{bundle.digest.tag_form}.sig",
         Digest.of(bundle_payload), "planned" if store is None else "signed")
    # 3. control-plane image
    cp_repo = config.control_plane_repository
    cp_digest = request.build_control_plane(store, cp_repo, request.version)
    done("image", "control-plane image", f"{registry}/{cp_repo}:{request.version}", cp_digest,
         "planned" if store is None else "pushed or unchanged")
    # 4. application images: already pushed by their own pipelines; lock their digests
    image_tags, image_locks = {}, {}
    for key in sorted(config.images):
        image = config.image(key)
        tag = image.tag or request.image_tags.get(key) or request.version
        try:
            digest = client.resolve(image.repository, tag).digest
        except NotFoundError:
            raise PublishError(
                f"image {key}: {registry}/{image.repository}:{tag} does not exist",
                hint="push the application image before publishing the release, or pass "
                f"--image-tag {key}=<tag>",
            ) from None
        image_tags[key] = tag
        image_locks[key] = f"{registry}/{image.repository}@{digest}"
        done("lock", f"image {key}", f"{registry}/{image.repository}:{tag}", digest, "locked")
    # 5. release manifest
    release_repo = config.release_repository
    existing = _existing_release(client, release_repo, request.version)
    sequence = existing.sequence if existing is not None and existing.sequence is not None \
        else _next_sequence(client, release_repo, config, request.version)
    created = existing.created if existing is not None and existing.created else rfc3339(
        int((request.created or datetime.fromtimestamp(request.epoch, UTC)).timestamp()))
    document: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "version": request.version,
        "images": image_tags,
        "config": {"repository": f"{registry}/{config.config_repository}",
                   "digest": str(bundle.digest), "tag": request.version,
                   "version": request.version},
        "valuesProfile": config.appliance.values_profile,
        "controlPlane": f"{registry}/{cp_repo}@{cp_digest}",
        "charts": {name: pin.version for name, pin in pins.items()},
        "profileValues": rendered.profile_values,
        "created": created,
        "sequence": sequence,
        "source": {"repository": request.source_repository,
                   "revision": request.source_revision},
        "locks": {
            "images": image_locks,
            "charts": {name: {"ref": f"oci://{registry}/{config.charts_repository}/{name}:"
                              f"{pin.tag}", "digest": str(pin.digest)}
                       for name, pin in pins.items()},
            "controlPlane": str(cp_digest),
            "config": str(bundle.digest),
        },
    }
    if request.channel is not None:
        document["channel"] = request.channel
    release = validate_document(document, what="release manifest to publish")
    data = write_manifest(release, bundle_helmreleases=rendered.helmreleases)
    if existing is not None and _comparable(existing) != _comparable(release):
        raise ImmutableTagError(
            f"release {request.version} already exists in {registry}/{release_repo} with "
            "other content",
            hint="version tags are immutable: publish a new version",
        )
    artifact = release_artifact(data, release)
    digest = Digest.of(artifact)
    if store is not None:
        config_desc = Descriptor.of(CONFIG_MEDIA_TYPE, data)
        layer_desc = Descriptor.of(RELEASE_LAYER_MEDIA_TYPE, data)
        result = push_immutable(store, release_repo, request.version,
                                [(data, config_desc), (data, layer_desc)], artifact, OCI_MANIFEST,
                                what="release manifest")
        outcome = result.outcome
    else:
        outcome = "planned"
    done("manifest", "release manifest", f"{registry}/{release_repo}:{request.version}",
         digest, outcome)
    # 6. signature (deterministic: a re-run appends nothing)
    payload = build_payload(f"{registry}/{release_repo}", digest, version=request.version,
                            sequence=sequence, created=release.created_at)
    signature = request.signer.sign(payload)
    if store is not None:
        append_signature(store, release_repo, digest, payload, signature)
    done("signature", f"signature by {request.signer.keyid}",
         f"{registry}/{release_repo}:{digest.tag_form}.sig", Digest.of(payload),
         "planned" if store is None else "signed")
    report.digest, report.sequence = digest, sequence
    return report


def check_version(version: str) -> None:
    """Raise ``PublishError`` unless ``version`` is SemVer."""
    try:
        semver.Version.parse(version)
    except ValueError:
        raise PublishError(f"version {version!r} is not SemVer (MAJOR.MINOR.PATCH)",
                           hint="release versions order releases; use e.g. 1.4.0") from None


def release_artifact(data: bytes, release: ReleaseManifest) -> bytes:
    """The OCI artifact of a release manifest: the manifest bytes as its config blob and
    as its one layer, artifactType and annotations (version, created, sequence)."""
    annotations = {"org.opencontainers.image.version": release.version,
                   SEQUENCE_ANNOTATION: str(release.sequence)}
    if release.created:
        annotations["org.opencontainers.image.created"] = str(release.created)
    manifest = Manifest(
        schema_version=2, media_type=OCI_MANIFEST, artifact_type=ARTIFACT_TYPE,
        config=Descriptor.of(CONFIG_MEDIA_TYPE, data),
        layers=[Descriptor.of(RELEASE_LAYER_MEDIA_TYPE, data,
                              annotations={"org.opencontainers.image.title":
                                           "release-manifest.json"})],
        annotations=annotations,
    )
    return manifest.to_json()


def _existing_release(client: RegistryClient, repository: str,
                      version: str) -> ReleaseManifest | None:
    try:
        fetched = client.get_manifest(repository, version)
    except NotFoundError:
        return None
    parsed = fetched.parse()
    if not isinstance(parsed, Manifest) or not is_release_artifact(parsed):
        raise ImmutableTagError(f"{repository}:{version} exists and is not a release manifest",
                                hint="choose another version")
    return read_manifest(client.fetch_blob_bytes(repository, parsed.config))


def _comparable(release: ReleaseManifest) -> dict[str, Any]:
    document = manifest_document(release)
    for volatile in ("created", "sequence", "channel"):
        document.pop(volatile, None)
    return document


def release_versions(client: RegistryClient, repository: str,
                     config: ReleaseConfig) -> list[str]:
    """The SemVer version tags of the release repository (channels and signatures left out)."""
    channels = set(config.appliance.channels)
    versions = []
    for tag in client.list_tags(repository, missing_ok=True):
        if tag in channels:
            continue
        try:
            semver.Version.parse(tag)
        except ValueError:
            continue
        versions.append(tag)
    return versions


def _next_sequence(client: RegistryClient, repository: str, config: ReleaseConfig,
                   version: str) -> int:
    versions = [v for v in release_versions(client, repository, config) if v != version]

    def sequence_of(tag: str) -> int:
        parsed = client.get_manifest(repository, tag).parse()
        annotations = parsed.annotations or {}
        value = annotations.get(SEQUENCE_ANNOTATION)
        if value is not None and value.isdigit():
            return int(value)
        if isinstance(parsed, Manifest):
            release = read_manifest(client.fetch_blob_bytes(repository, parsed.config))
            return release.sequence or 0
        return 0

    with concurrent.futures.ThreadPoolExecutor(max_workers=client.config.concurrency) as pool:
        sequences = list(pool.map(sequence_of, versions))
    return max(sequences, default=0) + 1
