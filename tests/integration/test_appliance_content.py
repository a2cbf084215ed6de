"""The appliance's content: charts/, flux/ and control_plane/deploy/ (issue 8).

Runs the real helm and kubectl (kustomize) and inspects what they render with PyYAML, so the
conventions the publisher's renderer and the consumer rely on (flux/README.md, charts/README.md)
are checked on the actual output, not on the source text.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import semver
import yaml

from tests.tools import ROOT, require_tool

pytestmark = pytest.mark.integration

CHARTS_DIR = ROOT / "charts"
FLUX_BASE = ROOT / "flux" / "base"
PROFILE = "single-node"
VALUES_DIR = ROOT / "flux" / "profiles" / PROFILE / "values"
CONTROL_PLANE_DEPLOY = ROOT / "control_plane" / "deploy"
RELEASE_TOML = tomllib.loads((ROOT / "release.toml").read_text())
CHART_NAMES = sorted(RELEASE_TOML["charts"]["names"])

APP_NAMESPACE = "alga"
FLUX_NAMESPACE = "flux-system"
REGISTRY_PLACEHOLDER = "registry.invalid/alga"
HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
# Stage (child Flux Kustomization) -> the releases it applies, in dependency order.
STAGES = {
    "platform": {"pgbouncer", "temporal"},
    "core": {"sebastian"},
    "background": {"temporal-worker", "workflow-worker", "email-service"},
}
STAGE_DEPENDS_ON = {"platform": [], "core": ["platform"], "background": ["core"]}
# Releases whose image the release manifest pins (key of release.toml [images] / manifest images).
RELEASE_IMAGE_KEYS = {
    "sebastian": "algaCore",
    "workflow-worker": "workflowWorker",
    "email-service": "emailService",
    "temporal-worker": "temporalWorker",
    "pgbouncer": "pgbouncer",
    "temporal": "temporal",
}
FLUX_API_VERSIONS = {
    "OCIRepository": "source.toolkit.fluxcd.io/v1",
    "Kustomization": "kustomize.toolkit.fluxcd.io/v1",
    "HelmRelease": "helm.toolkit.fluxcd.io/v2",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
ALLOWED_RBAC_VERBS = {"get", "list", "watch", "create", "update", "patch"}
TEST_TAG = "1.2.3"


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)


def load_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm")


@pytest.fixture(scope="module")
def kubectl() -> str:
    return require_tool("kubectl")


def kustomize(kubectl: str, path: Path) -> list[dict[str, Any]]:
    result = run([kubectl, "kustomize", str(path)])
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return load_docs(result.stdout)


def profile_values_file(release: str) -> Path:
    return VALUES_DIR / f"{release}.{PROFILE}.yaml"


def helm_template(helm: str, chart: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(
        [
            helm,
            "template",
            chart,
            str(CHARTS_DIR / chart),
            "--namespace",
            APP_NAMESPACE,
            "--values",
            str(profile_values_file(chart)),
            *extra,
        ]
    )


# --- shared checks -----------------------------------------------------------------------


def containers_of(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers") or []
    yield from pod_spec["containers"]


def assert_hardened_workload(workload: dict[str, Any]) -> None:
    """Pod and containers run non-root, without capabilities, with probes and resources."""
    where = f"{workload['kind']}/{workload['metadata']['name']}"
    pod = workload["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext") or {}
    assert pod_sc.get("runAsNonRoot") is True, where
    assert int(pod_sc.get("runAsUser", 0)) > 0, where
    assert int(pod_sc.get("runAsGroup", 0)) > 0, where
    assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where
    for container in containers_of(pod):
        here = f"{where} container {container['name']}"
        sc = container.get("securityContext") or {}
        assert sc.get("allowPrivilegeEscalation") is False, here
        assert sc.get("privileged", False) is False, here
        assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), here
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, here
        assert int(sc.get("runAsUser", pod_sc["runAsUser"])) > 0, here
        resources = container.get("resources") or {}
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound) or {}), f"{here}: {bound}"
        if workload["kind"] != "Job":  # a run-to-completion Job has nothing to probe
            assert container.get("livenessProbe"), f"{here}: livenessProbe"
            assert container.get("readinessProbe"), f"{here}: readinessProbe"


def image_tag(image: str) -> str | None:
    """The tag of an image reference (None without one); a digest suffix is ignored."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


# --- charts --------------------------------------------------------------------------------


def test_chart_folders_are_the_release_charts() -> None:
    folders = sorted(p.parent.name for p in CHARTS_DIR.glob("*/Chart.yaml"))
    assert folders == CHART_NAMES


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_chart_metadata_and_no_default_tag(chart: str) -> None:
    meta = yaml.safe_load((CHARTS_DIR / chart / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == chart
    semver.Version.parse(meta["version"])
    values = yaml.safe_load((CHARTS_DIR / chart / "values.yaml").read_text())
    assert values["image"]["repository"]
    assert not values["image"].get("tag"), "the tag comes from the release, never a default"


def test_chart_helpers_are_one_shared_file() -> None:
    texts = {(CHARTS_DIR / c / "templates" / "_helpers.tpl").read_text() for c in CHART_NAMES}
    assert len(texts) == 1, "charts/*/templates/_helpers.tpl have drifted apart"


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_helm_lint_is_clean(helm: str, chart: str) -> None:
    lint_values = CHARTS_DIR / chart / "ci" / "lint-values.yaml"
    result = run([helm, "lint", "--strict", str(CHARTS_DIR / chart), "--values", str(lint_values)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[WARNING]" not in output and "[ERROR]" not in output, output
    assert "level=WARN" not in output, output


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_profile_values_render_hardened_pinned_workloads(helm: str, chart: str) -> None:
    result = helm_template(helm, chart, "--set", f"image.tag={TEST_TAG}")
    assert result.returncode == 0, result.stderr
    docs = load_docs(result.stdout)
    workloads = [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]
    assert workloads, f"{chart} renders no workload"
    repository = yaml.safe_load(profile_values_file(chart).read_text())["image"]["repository"]
    for workload in workloads:
        assert_hardened_workload(workload)
        for container in containers_of(workload["spec"]["template"]["spec"]):
            image = container["image"]
            tag = image_tag(image)
            assert tag and tag != "latest", image
            assert image == f"{repository}:{TEST_TAG}", image


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_render_without_a_tag_or_with_latest_fails(helm: str, chart: str) -> None:
    missing = helm_template(helm, chart, "--set", "image.tag=")
    assert missing.returncode != 0
    assert "image.tag is required" in missing.stderr
    latest = helm_template(helm, chart, "--set", "image.tag=latest")
    assert latest.returncode != 0
    assert "must not be latest" in latest.stderr


def test_sebastian_has_setup_hook_and_volumes(helm: str) -> None:
    docs = load_docs(helm_template(helm, "sebastian", "--set", f"image.tag={TEST_TAG}").stdout)
    (job,) = of_kind(docs, "Job")
    assert "pre-upgrade" in job["metadata"]["annotations"]["helm.sh/hook"]
    claims = {pvc["metadata"]["name"] for pvc in of_kind(docs, "PersistentVolumeClaim")}
    (deployment,) = of_kind(docs, "Deployment")
    mounted = {
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims and mounted == claims
    assert of_kind(docs, "Service")
    (ingress,) = of_kind(docs, "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "app.example.invalid"


# --- profile values ------------------------------------------------------------------------


def test_profile_values_exist_per_release_and_leave_release_tags_open() -> None:
    files = sorted(p.name for p in VALUES_DIR.glob("*.yaml"))
    assert files == sorted(f"{c}.{PROFILE}.yaml" for c in CHART_NAMES)
    for chart in CHART_NAMES:
        image = yaml.safe_load(profile_values_file(chart).read_text())["image"]
        # every image, third-party ones included (mirrored at a version release.toml pins),
        # comes from the release's pins
        entry = RELEASE_TOML["images"][RELEASE_IMAGE_KEYS[chart]]
        path = entry if isinstance(entry, str) else entry["repository"]
        assert image["repository"] == f"registry.invalid/{path}"
        assert image["tag"] == "", "filled at install with the release's pinned tag"


# --- flux ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flux(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """`kubectl kustomize` of flux/base and of each stage directory on its own."""
    return {"base": kustomize(kubectl, FLUX_BASE)} | {
        stage: kustomize(kubectl, FLUX_BASE / stage) for stage in STAGES
    }


def all_flux_docs(flux: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [doc for docs in flux.values() for doc in docs]


def test_flux_objects_use_only_the_stable_apis(flux: dict[str, list[dict[str, Any]]]) -> None:
    for doc in all_flux_docs(flux):
        if doc["kind"] in FLUX_API_VERSIONS:
            assert doc["apiVersion"] == FLUX_API_VERSIONS[doc["kind"]], doc["metadata"]["name"]
        else:
            assert doc["apiVersion"] == "v1" and doc["kind"] == "Namespace", doc


def test_one_helmrelease_per_chart_in_its_stage(flux: dict[str, list[dict[str, Any]]]) -> None:
    assert not of_kind(flux["base"], "HelmRelease"), "releases belong to the stages"
    names = sorted(hr["metadata"]["name"] for hr in of_kind(all_flux_docs(flux), "HelmRelease"))
    assert names == CHART_NAMES
    for stage, releases in STAGES.items():
        assert {hr["metadata"]["name"] for hr in of_kind(flux[stage], "HelmRelease")} == releases


def test_helmreleases_reference_pinnable_chart_sources(
    flux: dict[str, list[dict[str, Any]]],
) -> None:
    sources = {
        (repo["metadata"]["namespace"], repo["metadata"]["name"]): repo
        for repo in of_kind(all_flux_docs(flux), "OCIRepository")
    }
    for release in of_kind(all_flux_docs(flux), "HelmRelease"):
        name, namespace = release["metadata"]["name"], release["metadata"]["namespace"]
        assert namespace == APP_NAMESPACE
        ref = release["spec"]["chartRef"]
        assert ref["kind"] == "OCIRepository" and ref["name"] == name
        source = sources[(ref.get("namespace", namespace), ref["name"])]
        assert source["spec"]["url"] == f"oci://{REGISTRY_PLACEHOLDER}/charts/{name}"
        assert source["spec"]["ref"] == {"tag": "0.0.0"}
        assert source["spec"]["layerSelector"] == {
            "mediaType": HELM_CHART_LAYER,
            "operation": "copy",
        }
        # The renderer finds each chart's source in this file (flux/README.md).
        (in_file,) = load_docs((FLUX_BASE / "sources" / f"{name}.yaml").read_text())
        assert in_file == source
        spec = release["spec"]
        assert spec["interval"]
        assert spec["install"]["remediation"]["retries"] > 0
        assert spec["upgrade"]["remediation"]["retries"] > 0


def test_values_key_follows_the_profile(flux: dict[str, list[dict[str, Any]]]) -> None:
    for release in of_kind(all_flux_docs(flux), "HelmRelease"):
        name = release["metadata"]["name"]
        assert release["spec"]["valuesFrom"] == [
            {"kind": "ConfigMap", "name": f"{name}-values", "valuesKey": f"{name}.{PROFILE}.yaml"}
        ]
        assert profile_values_file(name).is_file()


def test_release_dependencies_point_at_existing_releases(
    flux: dict[str, list[dict[str, Any]]],
) -> None:
    releases = {hr["metadata"]["name"]: hr for hr in of_kind(all_flux_docs(flux), "HelmRelease")}
    assert [d["name"] for d in releases["sebastian"]["spec"]["dependsOn"]] == ["pgbouncer"]
    for release in releases.values():
        for dependency in release["spec"].get("dependsOn", []):
            assert dependency["name"] in releases


def test_stages_chain_platform_core_background(flux: dict[str, list[dict[str, Any]]]) -> None:
    stages = {k["metadata"]["name"]: k for k in of_kind(flux["base"], "Kustomization")}
    assert set(stages) == set(STAGES)
    for name, stage in stages.items():
        spec = stage["spec"]
        assert stage["metadata"]["namespace"] == FLUX_NAMESPACE
        assert [d["name"] for d in spec.get("dependsOn", [])] == STAGE_DEPENDS_ON[name]
        assert spec["path"] == f"./base/{name}"
        assert (FLUX_BASE / name / "kustomization.yaml").is_file()
        assert spec["prune"] is True and spec["wait"] is True and spec["interval"]
        assert spec["sourceRef"] == {"kind": "OCIRepository", "name": "appliance-config"}


# --- control plane ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def control_plane(kubectl: str) -> list[dict[str, Any]]:
    return kustomize(kubectl, CONTROL_PLANE_DEPLOY)


def test_control_plane_rbac_is_an_explicit_allowlist(control_plane: list[dict[str, Any]]) -> None:
    roles = [doc for doc in control_plane if doc["kind"] in {"Role", "ClusterRole"}]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field, entries in rule.items():
                assert "*" not in "".join(entries), f"{role['metadata']} {field}: {entries}"
            assert set(rule["verbs"]) <= ALLOWED_RBAC_VERBS, rule
    granted = {
        (group, resource)
        for role in roles
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert {
        ("source.toolkit.fluxcd.io", "ocirepositories"),
        ("kustomize.toolkit.fluxcd.io", "kustomizations"),
        ("helm.toolkit.fluxcd.io", "helmreleases"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "events"),
    } <= granted
    (account,) = of_kind(control_plane, "ServiceAccount")
    for binding in of_kind(control_plane, "RoleBinding"):
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": account["metadata"]["name"],
                "namespace": account["metadata"]["namespace"],
            }
        ]


def test_control_plane_runs_as_10001_without_capabilities(
    control_plane: list[dict[str, Any]],
) -> None:
    (deployment,) = of_kind(control_plane, "Deployment")
    assert deployment["metadata"]["namespace"] == "appliance-system"
    assert_hardened_workload(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsGroup"] == 10001
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert re.fullmatch(
        r"registry\.invalid/alga/appliance-control-plane@sha256:0{64}", container["image"]
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path
        assert ports.get(http_get["port"], http_get["port"]) == 8080
    (service,) = of_kind(control_plane, "Service")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8080, "http")]
    assert ports["http"] == 8080


def test_app_namespace_is_declared_identically(
    flux: dict[str, list[dict[str, Any]]],
    control_plane: list[dict[str, Any]],
) -> None:
    def app_namespace(docs: list[dict[str, Any]]) -> dict[str, Any]:
        (namespace,) = [n for n in of_kind(docs, "Namespace") if n["metadata"]["name"] == "alga"]
        return namespace

    assert app_namespace(control_plane) == app_namespace(flux["base"])
