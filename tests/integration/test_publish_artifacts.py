"""Charts and the Flux config bundle: deterministic bytes, real helm/kubectl accept them,
re-publishing uploads nothing, and a version tag never changes content."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ocicore.client import RegistryClient
from ocicore.extract import safe_extract_bytes
from ocicore.models import Manifest
from publisher.bundle import (
    FLUX_CONTENT_MEDIA_TYPE,
    BundleError,
    BundleInputs,
    ChartPin,
    pack_bundle,
    push_bundle,
    render_bundle,
)
from publisher.charts import ChartError, pack_chart, push_chart
from publisher.push import ImmutableTagError
from tests.tools import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHARTS = sorted(p.name for p in (ROOT / "charts").iterdir() if (p / "Chart.yaml").is_file())


def _copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _touch_everything(root: Path, when: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.utime(path, (when, when))


def test_charts_pack_byte_identically_across_mtimes_and_umask(tmp_path: Path) -> None:
    first = {name: pack_chart(ROOT / "charts" / name, epoch=0) for name in CHARTS}
    copy = _copy_tree(ROOT / "charts", tmp_path / "charts")
    _touch_everything(copy, 1_234_567_890)
    old = os.umask(0o077)
    try:
        for path in copy.rglob("*"):
            path.chmod(0o700 if path.is_dir() else 0o600)
        second = {name: pack_chart(copy / name, epoch=0) for name in CHARTS}
    finally:
        os.umask(old)
    for name in CHARTS:
        assert first[name].content == second[name].content, name
        assert first[name].digest == second[name].digest, name


def test_chart_yaml_is_validated(tmp_path: Path) -> None:
    chart = _copy_tree(ROOT / "charts" / "pgbouncer", tmp_path / "pgbouncer")
    meta = (chart / "Chart.yaml").read_text()
    for old, new, fragment in [
        ("apiVersion: v2", "apiVersion: v1", "apiVersion must be v2"),
        ("name: pgbouncer", "name: other", "must equal the folder name"),
        ("version: 1.0.0", "version: 1.0", "version must be a string"),
        ("version: 1.0.0", 'version: "1.0"', "is not SemVer 2"),
    ]:
        assert old in meta
        (chart / "Chart.yaml").write_text(meta.replace(old, new, 1))
        with pytest.raises(ChartError, match=fragment):
            pack_chart(chart, epoch=0)


def _bundle_inputs(
    registry: str, charts: dict[str, ChartPin], epoch: int = 0, flux_dir: Path = ROOT / "flux"
) -> BundleInputs:
    return BundleInputs(
        flux_dir=flux_dir,
        registry=registry,
        charts_repository="alga/charts",
        charts=charts,
        values_profile="single-node",
        plain_http=True,
        source="https://example.invalid/alga/appliance",
        revision="main@sha1:" + "0" * 40,
        epoch=epoch,
    )


@pytest.fixture(scope="module")
def published(
    registry: object, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, ChartPin], str]:
    host = registry.host  # type: ignore[attr-defined]
    pins: dict[str, ChartPin] = {}
    with RegistryClient(host, credentials=None) as client:
        for name in CHARTS:
            chart = pack_chart(ROOT / "charts" / name, epoch=0)
            assert push_chart(client, "alga/charts", chart).outcome == "pushed"
            pins[name] = ChartPin(chart.name, chart.version, chart.digest)
        bundle = pack_bundle(render_bundle(_bundle_inputs(host, pins)), _bundle_inputs(host, pins))
        push_bundle(client, "alga/appliance-config", "1.0.0", bundle)
    return host, pins, str(bundle.digest)


@pytest.mark.parametrize("name", CHARTS)
def test_helm_pulls_templates_and_shows_our_charts(
    published: tuple[str, dict[str, ChartPin], str], name: str, tmp_path: Path
) -> None:
    host, pins, _ = published
    helm = require_tool("helm")
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(tmp_path / "cfg"),
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
    }
    ref = f"oci://{host}/alga/charts/{name}"
    version = pins[name].version
    subprocess.run(
        [helm, "pull", ref, "--version", version, "--plain-http", "-d", str(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
    )
    tgz = tmp_path / f"{name}-{version}.tgz"
    assert tgz.is_file()
    shown = subprocess.run(
        [helm, "show", "chart", ref, "--version", version, "--plain-http"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    ours = yaml.safe_load((ROOT / "charts" / name / "Chart.yaml").read_text())
    assert yaml.safe_load(shown) == ours
    lint_values = ROOT / "charts" / name / "ci" / "lint-values.yaml"
    rendered = subprocess.run(
        [helm, "template", name, str(tgz), "--values", str(lint_values)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert "Deployment" in kinds


def test_bundle_kustomizes_and_pins_published_charts(
    published: tuple[str, dict[str, ChartPin], str], tmp_path: Path
) -> None:
    host, pins, digest = published
    kubectl = require_tool("kubectl")
    with RegistryClient(host, credentials=None) as client:
        manifest = client.get_manifest("alga/appliance-config", "1.0.0").parse()
        assert (
            isinstance(manifest, Manifest)
            and str(client.resolve("alga/appliance-config", "1.0.0").digest) == digest
        )
        layer = manifest.layers[0]
        assert layer.media_type == FLUX_CONTENT_MEDIA_TYPE
        content = client.fetch_blob_bytes("alga/appliance-config", layer, max_bytes=10_000_000)
    root = tmp_path / "bundle"
    safe_extract_bytes(content, root)
    docs = []
    for directory in ["base", "base/platform", "base/core", "base/background"]:
        out = subprocess.run(
            [kubectl, "kustomize", str(root / directory)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        docs += [d for d in yaml.safe_load_all(out) if d]
    sources = {d["metadata"]["name"]: d for d in docs if d["kind"] == "OCIRepository"}
    releases = [d for d in docs if d["kind"] == "HelmRelease"]
    assert sorted(r["metadata"]["name"] for r in releases) == CHARTS
    for release in releases:
        source = sources[release["spec"]["chartRef"]["name"]]
        pin = pins[source["metadata"]["name"]]
        assert source["spec"]["url"] == f"oci://{host}/alga/charts/{pin.name}"
        assert source["spec"]["ref"] == {"tag": pin.tag, "digest": str(pin.digest)}
        assert source["spec"]["insecure"] is True
    values = sorted(p.name for p in (root / "profiles" / "single-node" / "values").iterdir())
    assert values == sorted(f"{c}.single-node.yaml" for c in CHARTS)
    text = (root / "profiles/single-node/values/sebastian.single-node.yaml").read_text()
    assert f"repository: {host}/alga/sebastian" in text and "registry.invalid" not in text


def test_bundle_is_deterministic_and_follows_the_profile(tmp_path: Path) -> None:
    pins = {
        n: ChartPin(n, "1.0.0", pack_chart(ROOT / "charts" / n, epoch=0).digest) for n in CHARTS
    }
    first = pack_bundle(
        render_bundle(_bundle_inputs("r.example", pins)), _bundle_inputs("r.example", pins)
    )
    flux = _copy_tree(ROOT / "flux", tmp_path / "flux")
    _touch_everything(flux, 999)
    second = pack_bundle(
        render_bundle(_bundle_inputs("r.example", pins, flux_dir=flux)),
        _bundle_inputs("r.example", pins, flux_dir=flux),
    )
    assert first.manifest == second.manifest and first.content == second.content
    (flux / "profiles" / "single-node").rename(flux / "profiles" / "edge")
    for path in (flux / "profiles" / "edge" / "values").iterdir():
        path.rename(path.with_name(path.name.replace("single-node", "edge")))
    inputs = _bundle_inputs("r.example", pins, flux_dir=flux)
    edge = render_bundle(BundleInputs(**{**inputs.__dict__, "values_profile": "edge"}))
    release = yaml.safe_load(edge.files["base/core/sebastian.yaml"])
    assert release["spec"]["valuesFrom"][0]["valuesKey"] == "sebastian.edge.yaml"


def test_bundle_refuses_unpublished_or_missing_charts() -> None:
    pins = {
        n: ChartPin(n, "1.0.0", pack_chart(ROOT / "charts" / n, epoch=0).digest) for n in CHARTS
    }
    partial = {k: v for k, v in pins.items() if k != "temporal"}
    with pytest.raises(BundleError, match="no chart 'temporal' is published"):
        render_bundle(_bundle_inputs("r.example", partial))


def test_second_publish_uploads_nothing_and_versions_are_immutable(
    registry: object, tmp_path: Path
) -> None:
    host = registry.host  # type: ignore[attr-defined]
    with RegistryClient(host, credentials=None) as client:
        chart = pack_chart(ROOT / "charts" / "email-service", epoch=0)
        push_chart(client, "immut/charts", chart)
        before = client.stats.bytes_uploaded
        assert push_chart(client, "immut/charts", chart).outcome == "unchanged"
        assert client.stats.bytes_uploaded == before
        changed_dir = _copy_tree(ROOT / "charts" / "email-service", tmp_path / "email-service")
        (changed_dir / "values.yaml").write_text(
            (changed_dir / "values.yaml").read_text() + "\n# changed\n"
        )
        changed = pack_chart(changed_dir, epoch=0)
        with pytest.raises(
            ImmutableTagError,
            match=f"already exists as {chart.digest}.*new content is {changed.digest}",
        ):
            push_chart(client, "immut/charts", changed)


def test_subcharts_and_helmignore_are_packed_as_helm_does(tmp_path: Path) -> None:
    """A dependency in charts/<sub> travels inside the parent (helm renders both) and
    .helmignore'd files stay out."""
    helm = require_tool("helm")
    parent = _copy_tree(ROOT / "charts" / "pgbouncer", tmp_path / "pgbouncer")
    sub = parent / "charts" / "metrics"
    (sub / "templates").mkdir(parents=True)
    (sub / "Chart.yaml").write_text("apiVersion: v2\nname: metrics\nversion: 0.1.0\n")
    (sub / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-metrics\n"
    )
    (parent / "Chart.yaml").write_text(
        (parent / "Chart.yaml").read_text()
        + "dependencies:\n  - name: metrics\n    version: 0.1.0\n"
    )
    (parent / "notes.swp").write_text("editor junk")
    (parent / ".helmignore").write_text((parent / ".helmignore").read_text() + "\n*.swp\n")
    chart = pack_chart(parent, epoch=0)
    tgz = tmp_path / "pgbouncer.tgz"
    tgz.write_bytes(chart.content)
    listing = subprocess.run(
        ["tar", "tzf", str(tgz)], check=True, capture_output=True, text=True
    ).stdout.split()
    assert "pgbouncer/charts/metrics/Chart.yaml" in listing
    assert "pgbouncer/notes.swp" not in listing
    lint_values = ROOT / "charts" / "pgbouncer" / "ci" / "lint-values.yaml"
    out = subprocess.run(
        [helm, "template", "r", str(tgz), "--values", str(lint_values)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(out) if d}
    assert "r-metrics" in names
