"""Offline reconcile against a real registry with real kubectl and helm: the published
charts and bundle render into workloads whose every image the release pins; a bundle that
overrides a pin, and a hostile bundle archive, are refused without writing anything."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.manifest import read_manifest
from consumer.reconcile import OfflineRender, UnpinnedImageError, reconcile_offline
from consumer.resolve import ResolvedRelease
from consumer.signatures import BindingClaims, ChannelBinding
from consumer.site import parse_site
from consumer.tools import Helm, Kubectl
from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.extract import UnsafeArchiveError
from ocicore.models import OCI_MANIFEST, Descriptor, Manifest
from ocicore.pool import ClientPool
from publisher.bundle import (
    FLUX_CONFIG_MEDIA_TYPE,
    FLUX_CONTENT_MEDIA_TYPE,
    BundleInputs,
    ChartPin,
    pack_bundle,
    push_bundle,
    render_bundle,
)
from publisher.charts import pack_chart, push_chart
from tests.support.artifacts import push_artifact
from tests.tools import require_tool
from tests.unit.test_plan import IMAGES, SITE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHARTS = sorted(p.name for p in (ROOT / "charts").iterdir() if (p / "Chart.yaml").is_file())
VERSION = "1.0.0"
HOME = "ghcr.io"  # the home registry of the mirrored variant; never contacted


@dataclass(frozen=True)
class Published:
    host: str
    pins: dict[str, ChartPin]
    images: dict[str, Digest]
    control_plane: Digest


@pytest.fixture(scope="module")
def published(registry: Any) -> Published:
    host = registry.host
    pins: dict[str, ChartPin] = {}
    images: dict[str, Digest] = {}
    with RegistryClient(host, credentials=None) as client:
        for name in CHARTS:
            chart = pack_chart(ROOT / "charts" / name, epoch=0)
            push_chart(client, "alga/charts", chart)
            pins[name] = ChartPin(chart.name, chart.version, chart.digest)
        for key, (repository, tag) in IMAGES.items():
            # a stand-in: an image only needs to exist with a digest to be locked
            images[key], _ = push_artifact(client, repository, tag, [f"{key}\n".encode()])
        control_plane, _ = push_artifact(client, "alga/appliance-control-plane", VERSION,
                                         [b"control plane\n"])
    return Published(host, pins, images, control_plane)


def _bundle_inputs(registry: str, pins: dict[str, ChartPin], flux_dir: Path) -> BundleInputs:
    return BundleInputs(
        flux_dir=flux_dir, registry=registry, charts_repository="alga/charts", charts=pins,
        values_profile="single-node", plain_http=True, source="https://example.invalid/alga",
        revision="0" * 40, epoch=0)


def _push_bundle(pub: Published, home: str, tag: str, flux_dir: Path = ROOT / "flux"
                 ) -> tuple[Digest, dict[str, str]]:
    inputs = _bundle_inputs(home, pub.pins, flux_dir)
    rendered = render_bundle(inputs)
    bundle = pack_bundle(rendered, inputs)
    with RegistryClient(pub.host, credentials=None) as client:
        push_bundle(client, "alga/appliance-config", tag, bundle)
    return bundle.digest, rendered.profile_values


def _release(pub: Published, home: str, bundle: Digest,
             profile_values: dict[str, str]) -> ResolvedRelease:
    document = {
        "schema": "alga.appliance.release/v1",
        "version": VERSION,
        "images": {key: tag for key, (_, tag) in IMAGES.items()},
        "config": {"repository": f"{home}/alga/appliance-config", "digest": str(bundle),
                   "tag": VERSION, "version": VERSION},
        "valuesProfile": "single-node",
        "controlPlane": f"{home}/alga/appliance-control-plane@{pub.control_plane}",
        "charts": {name: pin.version for name, pin in pub.pins.items()},
        "profileValues": profile_values,
        "created": "2026-11-27T12:00:00Z",
        "sequence": 1,
        "locks": {
            "images": {key: f"{home}/{repo}@{pub.images[key]}"
                       for key, (repo, _) in IMAGES.items()},
            "charts": {name: {"ref": f"oci://{home}/alga/charts/{name}:{pin.tag}",
                              "digest": str(pin.digest)} for name, pin in pub.pins.items()},
            "controlPlane": str(pub.control_plane),
            "config": str(bundle),
        },
    }
    data = json.dumps(document, sort_keys=True).encode()
    digest = Digest.of(data)
    binding = ChannelBinding(digest, "test-key", BindingClaims(channel="stable"))
    return ResolvedRelease(pub.host, "alga/appliance-release", "stable", "stable", digest,
                           read_manifest(data), data, binding)


def _client_for(host: str) -> ClientPool:
    def factory(registry: str) -> RegistryClient:
        assert registry == host, f"reconcile contacted {registry}, not the release's registry"
        return RegistryClient(registry, credentials=None)

    return ClientPool(factory)


def _reconcile(resolved: ResolvedRelease, workdir: Path) -> OfflineRender:
    with _client_for(resolved.registry) as pool:
        return reconcile_offline(resolved, parse_site(SITE), pool, workdir,
                                 helm=Helm(require_tool("helm")),
                                 kubectl=Kubectl(require_tool("kubectl")))


@pytest.mark.parametrize("variant", ["direct", "mirror"])
def test_every_chart_renders_and_every_image_is_pinned(
    published: Published, variant: str, tmp_path: Path
) -> None:
    home = published.host if variant == "direct" else HOME
    bundle, values = _push_bundle(published, home, f"{VERSION}-{variant}")
    resolved = _release(published, home, bundle, values)
    workdir = tmp_path / "out"
    result = _reconcile(resolved, workdir)

    assert result.directory == workdir
    # stage by stage (platform, core, background), each by dependsOn then name
    assert result.releases == ["pgbouncer", "temporal", "sebastian", "email-service",
                               "temporal-worker", "workflow-worker"]
    host = published.host
    expected = sorted(f"{host}/{repo}:{tag}@{published.images[key]}"
                      for key, (repo, tag) in IMAGES.items())
    assert result.images == expected
    kinds = {d["kind"] for d in result.manifests}
    assert {"Deployment", "Service", "Job", "Ingress", "PersistentVolumeClaim"} <= kinds
    ingress = next(d for d in result.manifests if d["kind"] == "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == SITE["hostname"]
    text = yaml.safe_dump_all(result.manifests)
    assert "example.invalid" not in text
    assert sum(d["kind"] == "HelmRelease" for d in result.flux_objects) == len(CHARTS)
    files = sorted(p.relative_to(workdir).as_posix() for p in (workdir / "manifests").iterdir())
    assert files[0] == "manifests/00-bundle.yaml" and len(files) == len(CHARTS) + 1
    assert (workdir / "images.txt").read_text().split() == expected
    assert (workdir / "charts" / "sebastian" / "sebastian" / "Chart.yaml").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_a_bundle_that_overrides_a_pinned_image_is_refused(
    published: Published, tmp_path: Path
) -> None:
    flux = tmp_path / "flux"
    shutil.copytree(ROOT / "flux", flux)
    path = flux / "base" / "core" / "sebastian.yaml"
    release = yaml.safe_load(path.read_text())
    release["spec"]["values"] = {"image": {"tag": "latest-build", "digest": ""}}
    path.write_text(yaml.safe_dump(release))
    bundle, values = _push_bundle(published, published.host, f"{VERSION}-override", flux)
    workdir = tmp_path / "out"
    with pytest.raises(UnpinnedImageError) as caught:
        _reconcile(_release(published, published.host, bundle, values), workdir)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{published.host}/alga/sebastian:latest-build (in Deployment/" in message
    assert caught.value.images == [f"{published.host}/alga/sebastian:latest-build"]
    assert not workdir.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["flux"]


def _hostile_tar(member: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in [("base/kustomization.yaml", b"resources: []\n"),
                           (member, b"owned\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as check:
        assert check.getnames()[-1] == member
    return data


@pytest.mark.parametrize("member", ["../x", "/etc/x", "base/../../x"])
def test_a_hostile_bundle_is_refused_and_nothing_is_written(
    published: Published, member: str, tmp_path: Path
) -> None:
    content = _hostile_tar(member)
    config = b"{}"
    manifest = Manifest(
        schema_version=2, media_type=OCI_MANIFEST,
        config=Descriptor.of(FLUX_CONFIG_MEDIA_TYPE, config),
        layers=[Descriptor.of(FLUX_CONTENT_MEDIA_TYPE, content)],
    )
    with RegistryClient(published.host, credentials=None) as client:
        client.push_blob("alga/hostile-config", config)
        client.push_blob("alga/hostile-config", content)
        bundle = client.push_manifest("alga/hostile-config", manifest.to_json(), OCI_MANIFEST)
    _, values = _push_bundle(published, published.host, f"{VERSION}-direct")
    resolved = _release(published, published.host, bundle, values)
    document = json.loads(resolved.manifest_bytes)
    document["config"]["repository"] = f"{published.host}/alga/hostile-config"
    data = json.dumps(document).encode()
    resolved = ResolvedRelease(resolved.registry, resolved.repository, resolved.selector,
                               resolved.channel, Digest.of(data), read_manifest(data), data,
                               resolved.binding)
    workdir = tmp_path / "out"
    workdir.mkdir()
    with pytest.raises(UnsafeArchiveError) as caught:
        _reconcile(resolved, workdir)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"config bundle {published.host}/alga/hostile-config@{bundle}: "
                              f"archive member {member!r}: ")
    assert ("absolute path" in message) if member.startswith("/") else (
        "escapes the extraction directory" in message)
    assert list(workdir.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert not (tmp_path / "x").exists()
