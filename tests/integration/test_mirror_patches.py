"""The parent Kustomization's patches for a mirrored release, applied by kustomize (what
Flux's kustomize-controller runs) to the bundle's chart sources: every chart source then
pulls from the mirror, by the same digest."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from consumer.plan import plan_install
from ocicore.digest import Digest
from publisher.bundle import BundleInputs, ChartPin, render_bundle
from tests.tools import require_tool
from tests.unit.test_plan import HOME, MIRROR, manifest_document, resolved_release, site

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_patches_point_every_chart_source_at_the_mirror(tmp_path: Path) -> None:
    resolved = resolved_release(manifest_document(), registry=MIRROR)
    charts = sorted(resolved.manifest.locks.charts or {})  # type: ignore[union-attr]
    pins = {c: ChartPin(c, "1.0.0", Digest.of(c.encode())) for c in charts}
    rendered = render_bundle(BundleInputs(
        flux_dir=ROOT / "flux", registry=HOME, charts_repository="alga/charts", charts=pins,
        values_profile="single-node", plain_http=False, source="s", revision="r", epoch=0))
    sources = tmp_path / "sources"
    sources.mkdir()
    names = []
    for path, data in rendered.files.items():
        if path.startswith("base/sources/") and path != "base/sources/kustomization.yaml":
            (sources / Path(path).name).write_bytes(data)
            names.append(Path(path).name)
    parent = plan_install(resolved, site()).find("Kustomization", "flux-system", "appliance")
    assert parent is not None
    patches = parent.to_dict()["spec"]["patches"]
    (sources / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         "resources": sorted(names), "patches": patches}))
    out = subprocess.run([require_tool("kubectl"), "kustomize", str(sources)], check=True,
                         capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert sorted(d["metadata"]["name"] for d in docs) == charts
    for doc in docs:
        name = doc["metadata"]["name"]
        assert doc["spec"]["url"] == f"oci://{MIRROR}/alga/charts/{name}"
        assert doc["spec"]["ref"]["digest"] == str(pins[name].digest)
