"""The install plan: objects and order, values with pinned images and site settings,
site-input errors, deterministic render, diff, and apply through a stand-in kubectl."""

from __future__ import annotations

import json
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consumer.manifest import read_manifest
from consumer.plan import ConfigMap, InstallPlan, PlanError, plan_install
from consumer.reconcile import ReconcileError, check_local_kustomizations, container_images
from consumer.render import (
    RenderError,
    apply,
    diff,
    diff_cluster,
    file_name,
    manifest_stream,
    render,
)
from consumer.resolve import ResolvedRelease
from consumer.signatures import BindingClaims, ChannelBinding
from consumer.site import SiteError, SiteSettings, parse_site, read_site
from consumer.tools import Kubectl, ToolFailedError
from ocicore.digest import Digest

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "flux" / "profiles" / "single-node" / "values"
HOME = "ghcr.io"
MIRROR = "mirror.example:5000"
VERSION = "1.4.0"
#: release.toml's image keys: repository under the registry, tag.
IMAGES = {
    "algaCore": ("alga/sebastian", "1.4.0"),
    "workflowWorker": ("alga/workflow-worker", "1.4.0"),
    "emailService": ("alga/email-service", "1.4.0"),
    "temporalWorker": ("alga/temporal-worker", "1.4.0"),
    "pgbouncer": ("alga/mirror/pgbouncer", "1.24.1"),
    "temporal": ("alga/mirror/temporal", "1.27.2"),
}
SITE: dict[str, Any] = {
    "hostname": "alga.example.com",
    "databaseHost": "db.internal.example.com",
    "smtpHost": "smtp.example.com",
    "smtpFrom": "noreply@alga.example.com",
}


def _digest(text: str) -> str:
    return str(Digest.of(text.encode()))


def profile_values(home: str = HOME) -> dict[str, str]:
    """The repository's single-node values as the publisher ships them."""
    return {p.name: p.read_text().replace("registry.invalid/", f"{home}/")
            for p in sorted(PROFILE.glob("*.yaml"))}


def manifest_document(home: str = HOME, values: dict[str, str] | None = None) -> dict[str, Any]:
    charts = sorted(p.name for p in (ROOT / "charts").iterdir() if (p / "Chart.yaml").is_file())
    return {
        "schema": "alga.appliance.release/v1",
        "version": VERSION,
        "images": {key: tag for key, (_, tag) in IMAGES.items()},
        "config": {"repository": f"{home}/alga/appliance-config", "digest": _digest("bundle"),
                   "tag": VERSION, "version": VERSION},
        "valuesProfile": "single-node",
        "controlPlane": f"{home}/alga/appliance-control-plane@{_digest('cp')}",
        "charts": dict.fromkeys(charts, "1.0.0"),
        "profileValues": profile_values(home) if values is None else values,
        "created": "2026-11-27T12:00:00Z",
        "sequence": 7,
        "channel": "stable",
        "locks": {
            "images": {key: f"{home}/{repo}@{_digest(key)}" for key, (repo, _) in IMAGES.items()},
            "charts": {c: {"ref": f"oci://{home}/alga/charts/{c}:1.0.0",
                           "digest": _digest(c)} for c in charts},
            "controlPlane": _digest("cp"),
            "config": _digest("bundle"),
        },
    }


def resolved_release(document: dict[str, Any], registry: str = HOME) -> ResolvedRelease:
    data = json.dumps(document, sort_keys=True).encode()
    digest = Digest.of(data)
    binding = ChannelBinding(digest, "key-1", BindingClaims(
        channel="stable", sequence=7, version=VERSION, created=datetime(2026, 11, 27, tzinfo=UTC)))
    return ResolvedRelease(registry, "alga/appliance-release", "stable", "stable", digest,
                           read_manifest(data), data, binding)


def site(**changes: Any) -> SiteSettings:
    return parse_site({**SITE, **changes})


def _public_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _values(plan: InstallPlan, release: str) -> dict[str, Any]:
    loaded = yaml.safe_load(plan.values[release])
    assert isinstance(loaded, dict)
    return loaded


# -- the objects ---------------------------------------------------------------------


def test_objects_come_in_dependency_order() -> None:
    plan = plan_install(resolved_release(manifest_document()), site())
    assert [o.key for o in plan.objects] == [
        "Namespace/flux-system",
        "Namespace/alga",
        "Namespace/appliance-system",
        "ConfigMap/alga/email-service-values",
        "ConfigMap/alga/pgbouncer-values",
        "ConfigMap/alga/sebastian-values",
        "ConfigMap/alga/temporal-values",
        "ConfigMap/alga/temporal-worker-values",
        "ConfigMap/alga/workflow-worker-values",
        "ConfigMap/appliance-system/appliance-release",
        "OCIRepository/flux-system/appliance-config",
        "Kustomization/flux-system/appliance",
    ]
    alga = plan.objects[1].to_dict()
    assert alga["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_parent_source_and_kustomization() -> None:
    manifest = manifest_document()
    plan = plan_install(resolved_release(manifest), site(interval="5m", timeout="20m"))
    source = plan.find("OCIRepository", "flux-system", "appliance-config")
    assert source is not None
    assert source.to_dict() == {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "OCIRepository",
        "metadata": {"name": "appliance-config", "namespace": "flux-system", "labels": {
            "app.kubernetes.io/managed-by": "appliance-release",
            "app.kubernetes.io/part-of": "alga-appliance"}},
        "spec": {"interval": "5m", "url": "oci://ghcr.io/alga/appliance-config",
                 "ref": {"digest": manifest["config"]["digest"]}},
    }
    parent = plan.find("Kustomization", "flux-system", "appliance")
    assert parent is not None
    assert parent.to_dict()["spec"] == {
        "interval": "5m", "timeout": "20m", "path": "./base", "prune": True, "wait": False,
        "sourceRef": {"kind": "OCIRepository", "name": "appliance-config"},
    }


def test_plain_http_and_cosign_verification() -> None:
    pem = _public_pem()
    plan = plan_install(resolved_release(manifest_document()),
                        site(plainHttp=True, cosignPublicKey=pem))
    source = plan.find("OCIRepository", "flux-system", "appliance-config")
    assert source is not None
    spec = source.to_dict()["spec"]
    assert spec["insecure"] is True
    assert spec["verify"] == {"provider": "cosign",
                              "secretRef": {"name": "appliance-config-cosign"}}
    secret = plan.find("Secret", "flux-system", "appliance-config-cosign")
    assert secret is not None and secret.to_dict()["stringData"] == {"cosign.pub": pem}
    keys = [o.key for o in plan.objects]
    assert keys.index("Secret/flux-system/appliance-config-cosign") < keys.index(
        "OCIRepository/flux-system/appliance-config")


def test_release_selection_configmap() -> None:
    resolved = resolved_release(manifest_document(), registry=MIRROR)
    plan = plan_install(resolved, site())
    selection = plan.find("ConfigMap", "appliance-system", "appliance-release")
    assert isinstance(selection, ConfigMap)
    data = selection.data
    assert data["version"] == VERSION and data["channel"] == "stable"
    assert data["digest"] == str(resolved.digest) and data["sequence"] == "7"
    assert json.loads(data["images"]) == {k: tag for k, (_, tag) in IMAGES.items()}
    assert data["controlPlane"] == f"{MIRROR}/alga/appliance-control-plane@{_digest('cp')}"
    assert data["manifest"].encode() == resolved.manifest_bytes
    assert data["repository"] == f"{MIRROR}/alga/appliance-release"


def test_initial_tenant_secret_only_when_the_site_has_one() -> None:
    resolved = resolved_release(manifest_document())
    assert plan_install(resolved, site()).find("Secret", "alga", "alga-initial-tenant") is None
    tenant = {"name": "Example Ltd", "adminEmail": "admin@example.com",
              "adminPassword": "correct horse battery"}
    secret = plan_install(resolved, site(tenant=tenant)).find(
        "Secret", "alga", "alga-initial-tenant")
    assert secret is not None
    assert secret.to_dict()["stringData"] == {"tenantName": "Example Ltd",
                                              "adminEmail": "admin@example.com",
                                              "adminPassword": "correct horse battery"}
    assert "correct horse" not in repr(secret)


# -- values --------------------------------------------------------------------------


def test_values_pin_every_image_and_fill_the_site_settings() -> None:
    document = manifest_document()
    plan = plan_install(resolved_release(document), site())
    sebastian = _values(plan, "sebastian")
    assert sebastian["image"] == {"repository": "ghcr.io/alga/sebastian", "tag": "1.4.0",
                                  "digest": _digest("algaCore")}
    assert sebastian["hostname"] == "alga.example.com"
    assert _values(plan, "pgbouncer")["image"]["tag"] == "1.24.1"
    assert _values(plan, "pgbouncer")["upstream"]["host"] == "db.internal.example.com"
    assert _values(plan, "temporal")["database"]["host"] == "db.internal.example.com"
    email = _values(plan, "email-service")
    assert email["smtp"] == {"host": "smtp.example.com", "port": 587,
                             "from": "noreply@alga.example.com"}
    for release, text in plan.values.items():
        assert "example.invalid" not in text, release
        assert _values(plan, release)["image"]["digest"].startswith("sha256:")
    configmap = plan.find("ConfigMap", "alga", "sebastian-values")
    assert isinstance(configmap, ConfigMap)
    assert list(configmap.data) == ["sebastian.single-node.yaml"]


def test_a_mirrored_release_installs_everything_from_the_mirror() -> None:
    plan = plan_install(resolved_release(manifest_document(), registry=MIRROR), site())
    for release in plan.values:
        assert _values(plan, release)["image"]["repository"].startswith(f"{MIRROR}/alga/")
    stream = manifest_stream(plan).decode()
    assert f"oci://{MIRROR}/alga/appliance-config" in stream
    # the manifest bytes (release selection) still name the home registry; nothing else does
    rest = [d for d in plan.to_dicts() if d["metadata"]["name"] != "appliance-release"]
    assert HOME not in yaml.safe_dump_all(rest)
    # the bundle's chart sources name the home registry: the parent Kustomization patches
    # each of them to pull from the mirror
    parent = plan.find("Kustomization", "flux-system", "appliance")
    assert parent is not None
    patches = parent.to_dict()["spec"]["patches"]
    charts = sorted(resolved_release(manifest_document()).manifest.locks.charts or {})  # type: ignore[union-attr]
    assert [p["target"]["name"] for p in patches] == charts
    for patch in patches:
        body = yaml.safe_load(patch["patch"])
        assert body["spec"]["url"] == f"oci://{MIRROR}/alga/charts/{patch['target']['name']}"
    home = plan_install(resolved_release(manifest_document()), site())
    home_parent = home.find("Kustomization", "flux-system", "appliance")
    assert home_parent is not None and "patches" not in home_parent.to_dict()["spec"]


def test_images_at_any_depth_are_pinned_and_an_unpinned_one_is_refused() -> None:
    values = profile_values()
    values["sebastian.single-node.yaml"] += (
        "workers:\n  - name: extra\n    image:\n      repository: ghcr.io/alga/workflow-worker\n"
        "      pullPolicy: Always\n")
    plan = plan_install(resolved_release(manifest_document(values=values), MIRROR), site())
    extra = _values(plan, "sebastian")["workers"][0]["image"]
    assert extra == {"repository": f"{MIRROR}/alga/workflow-worker", "tag": "1.4.0",
                     "digest": _digest("workflowWorker"), "pullPolicy": "Always"}
    values["sebastian.single-node.yaml"] += "sidecar:\n  image:\n    repository: docker.io/evil/x\n"
    with pytest.raises(PlanError) as caught:
        plan_install(resolved_release(manifest_document(values=values)), site())
    assert caught.value.message == (
        "values of sebastian: image docker.io/evil/x is not pinned by release 1.4.0")


def test_missing_site_setting_is_named_only_when_the_values_use_it() -> None:
    resolved = resolved_release(manifest_document())
    with pytest.raises(SiteError, match=r"smtpFrom: required, because values of email-service "
                       r"uses it at smtp.from"):
        plan_install(resolved, site(smtpFrom=None))
    values = {k: v for k, v in profile_values().items() if not k.startswith("email-service")}
    plan = plan_install(resolved_release(manifest_document(values=values)),
                        site(smtpFrom=None, smtpHost=None))
    assert "email-service" not in plan.values


def test_unknown_placeholder_and_broken_values_are_refused() -> None:
    values = profile_values()
    values["sebastian.single-node.yaml"] += "cdn: cdn.example.invalid\n"
    with pytest.raises(PlanError, match=r"cdn holds 'cdn\.example\.invalid', a placeholder no"):
        plan_install(resolved_release(manifest_document(values=values)), site())
    values = profile_values()
    values["sebastian.single-node.yaml"] = "- a list\n"
    with pytest.raises(PlanError, match="values of sebastian: must be a YAML mapping"):
        plan_install(resolved_release(manifest_document(values=values)), site())
    with pytest.raises(PlanError, match="has no profileValues for its values profile"):
        plan_install(resolved_release(manifest_document(values={"x.edge.yaml": "a: 1\n"})),
                     site())


def test_values_yaml_is_deterministic() -> None:
    first = plan_install(resolved_release(manifest_document()), site())
    second = plan_install(resolved_release(manifest_document()), site())
    assert first.values == second.values
    text = first.values["sebastian"]
    assert text.index("hostname:") < text.index("image:") < text.index("ingress:")


# -- the site input ------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"hostname": None}, "site settings: hostname: "),
    ({"hostname": "Alga.Example.com"}, "hostname: must be a lowercase DNS name"),
    ({"hostname": "app.example.invalid"}, "hostname: is a placeholder under example.invalid"),
    ({"smtpFrom": "not-an-address"}, "smtpFrom: must be an email address"),
    ({"interval": "ten minutes"}, "interval: must be a Go duration"),
    ({"cosignPublicKey": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
     "cosignPublicKey: must be a PEM public key"),
    ({"hostnmae": "alga.example.com"}, "site settings: hostnmae: unknown setting"),
    ({"tenant": {"name": "x", "adminEmail": "a@example.com", "adminPassword": "short"}},
     "tenant.adminPassword: String should have at least 12 characters"),
    ({"plainHttp": "yes"}, "plainHttp: Input should be a valid boolean"),
])
def test_site_errors_name_the_setting(change: dict[str, Any], message: str) -> None:
    document = {k: v for k, v in {**SITE, **change}.items() if v is not None}
    with pytest.raises(SiteError) as caught:
        parse_site(document)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_site_file_is_read_from_yaml() -> None:
    text = yaml.safe_dump({**SITE, "plainHttp": True}).encode()
    assert read_site(text).plain_http is True
    with pytest.raises(SiteError, match="site settings: hostname: required"):
        read_site(b"smtpHost: smtp.example.com\n")
    with pytest.raises(SiteError, match="not valid UTF-8 YAML"):
        read_site(b"hostname: [\n")
    with pytest.raises(SiteError, match="must be a mapping of settings"):
        read_site(b"- hostname\n")
    with pytest.raises(SiteError, match=r"hostname: required \(and 1 more\)"):
        read_site(b"interval: x\n")


# -- render and diff -----------------------------------------------------------------


def _plan(**changes: Any) -> InstallPlan:
    return plan_install(resolved_release(manifest_document()), site(**changes))


def test_render_is_deterministic_and_named_by_order(tmp_path: Path) -> None:
    tenant = {"name": "Example", "adminEmail": "a@example.com", "adminPassword": "x" * 16}
    first = render(_plan(tenant=tenant), tmp_path / "a")
    second = render(_plan(tenant=tenant), tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in second]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert [p.name for p in first][:4] == [
        "00-namespace-flux-system.yaml", "01-namespace-alga.yaml",
        "02-namespace-appliance-system.yaml", "03-secret-alga-alga-initial-tenant.yaml"]
    assert first[-1].name == "12-kustomization-flux-system-appliance.yaml"
    assert stat.S_IMODE(first[3].stat().st_mode) == 0o600
    assert stat.S_IMODE(first[-1].stat().st_mode) == 0o644
    values = yaml.safe_load((tmp_path / "a" / "06-configmap-alga-sebastian-values.yaml")
                            .read_text())
    assert "hostname: alga.example.com\n" in values["data"]["sebastian.single-node.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary left


def test_render_refuses_a_non_empty_directory_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RenderError, match="is not empty"):
        render(_plan(), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    files = render(_plan(), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert render(_plan(), empty)


def test_render_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.render as module

    calls = []

    def failing(data: Any) -> str:
        calls.append(data)
        if len(calls) > 3:
            raise OSError(28, "No space left on device")
        return "x: 1\n"

    monkeypatch.setattr(module, "dump_yaml", failing)
    with pytest.raises(RenderError, match="No space left on device"):
        render(_plan(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_file_names() -> None:
    doc = {"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "alga"}}
    assert file_name(7, doc) == "07-configmap-alga-x.yaml"
    assert file_name(7, doc, width=3) == "007-configmap-alga-x.yaml"


def test_diff_against_a_rendered_directory(tmp_path: Path) -> None:
    render(_plan(), tmp_path / "old")
    assert diff(_plan(), tmp_path / "old").empty
    changed = diff(_plan(hostname="new.example.com"), tmp_path / "old")
    assert changed.added == [] and changed.removed == []
    assert changed.changed == {"ConfigMap/alga/sebastian-values":
                               ["data.sebastian.single-node.yaml"]}
    (tmp_path / "old" / "05-configmap-alga-sebastian-values.yaml").unlink()
    (tmp_path / "old" / "99-extra.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: alga}\n")
    result = diff(_plan(), tmp_path / "old")
    assert result.lines() == ["+ ConfigMap/alga/sebastian-values", "- ConfigMap/alga/extra"]
    (tmp_path / "old" / "98-bad.yaml").write_text("kind: [\n")
    with pytest.raises(RenderError, match=r"98-bad\.yaml"):
        diff(_plan(), tmp_path / "old")


# -- apply through a stand-in kubectl -------------------------------------------------


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for kubectl: there is no cluster in the unit tests, so this script
    records its argv and stdin and exits with ``$FAKE_KUBECTL_EXIT``."""
    record = tmp_path / "record.json"
    script = tmp_path / "kubectl"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "record = {'argv': sys.argv[1:], 'stdin': sys.stdin.read()}\n"
        f"json.dump(record, open({str(record)!r}, 'w'))\n"
        "print('diff output' if os.environ.get('FAKE_KUBECTL_EXIT') == '1' else 'applied')\n"
        "print('kubectl: boom', file=sys.stderr)\n"
        "sys.exit(int(os.environ.get('FAKE_KUBECTL_EXIT', '0')))\n")
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_KUBECTL_EXIT", "0")
    return script


def _recorded(script: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((script.parent / "record.json").read_text())
    return result


def test_apply_is_server_side_in_plan_order(fake_kubectl: Path, tmp_path: Path) -> None:
    plan = _plan()
    kubectl = Kubectl(str(fake_kubectl), kubeconfig=tmp_path / "kubeconfig", context="appliance")
    assert apply(plan, kubectl).strip() == "applied"
    record = _recorded(fake_kubectl)
    assert record["argv"] == ["--kubeconfig", str(tmp_path / "kubeconfig"),
                              "--context", "appliance", "apply", "--server-side",
                              "--field-manager", "appliance-release", "-f", "-"]
    sent = [d for d in yaml.safe_load_all(record["stdin"]) if d]
    assert sent == plan.to_dicts()
    apply(plan, kubectl, force_conflicts=True)
    assert "--force-conflicts" in _recorded(fake_kubectl)["argv"]


def test_apply_failure_is_one_line(fake_kubectl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KUBECTL_EXIT", "1")
    with pytest.raises(ToolFailedError, match=r"kubectl apply of the install plan: kubectl "
                       r"failed \(exit 1\): kubectl: boom"):
        apply(_plan(), Kubectl(str(fake_kubectl)))


def test_diff_cluster_reads_exit_codes(fake_kubectl: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    kubectl = Kubectl(str(fake_kubectl), context="appliance")
    assert not diff_cluster(_plan(), kubectl).differs
    assert _recorded(fake_kubectl)["argv"] == ["--context", "appliance", "diff",
                                               "--server-side", "--field-manager",
                                               "appliance-release", "-f", "-"]
    monkeypatch.setenv("FAKE_KUBECTL_EXIT", "1")
    result = diff_cluster(_plan(), kubectl)
    assert result.differs and result.output.strip() == "diff output"
    monkeypatch.setenv("FAKE_KUBECTL_EXIT", "2")
    with pytest.raises(ToolFailedError, match=r"exit 2\): kubectl: boom"):
        diff_cluster(_plan(), kubectl)


# -- offline-reconcile helpers (no network) -------------------------------------------


def test_container_images_are_found_in_every_pod_template() -> None:
    cronjob = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "initContainers": [{"name": "i", "image": "r/i:1"}],
        "containers": [{"name": "c", "image": "r/c:1"}, {"name": "no-image"}],
        "ephemeralContainers": [{"name": "e", "image": "r/e:1"}]}}}}}}
    assert list(container_images(cronjob)) == ["r/i:1", "r/c:1", "<no image>", "r/e:1"]
    pod = {"kind": "Pod", "spec": {"containers": [{"image": "r/p:1"}]}}
    assert list(container_images(pod)) == ["r/p:1"]
    assert list(container_images({"kind": "ConfigMap", "data": {"containers": "x"}})) == []


@pytest.mark.parametrize("entry", ["https://github.com/x/y//base", "git@github.com:x/y.git",
                                   "/etc", "../outside", "missing"])
def test_bundle_kustomizations_must_be_local(tmp_path: Path, entry: str) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "base" / "sources").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (bundle / "base" / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["sources", entry]}))
    with pytest.raises(ReconcileError, match="is not a file or folder of the bundle"):
        check_local_kustomizations(bundle)
    (bundle / "base" / "kustomization.yaml").write_text("resources: [sources]\n")
    check_local_kustomizations(bundle)


def test_helmreleases_are_ordered_by_stage_then_dependencies() -> None:
    from consumer.reconcile import _apply_order

    def stage(name: str, after: str | None = None) -> dict[str, Any]:
        return {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                "metadata": {"name": name, "namespace": "flux-system"},
                "spec": {"path": f"./base/{name}", "dependsOn": [{"name": after}] if after else [],
                         "sourceRef": {"kind": "OCIRepository", "name": "appliance-config"}}}

    def release(name: str, after: str | None = None) -> dict[str, Any]:
        return {"kind": "HelmRelease", "metadata": {"name": name, "namespace": "alga"},
                "spec": {"dependsOn": [{"name": after}] if after else []}}

    built = [("base", [stage("z-first"), stage("a-second", "z-first")]),
             ("base/a-second", [release("b"), release("a", "c"), release("c")]),
             ("base/z-first", [release("y")])]
    assert [r["metadata"]["name"] for r in _apply_order(built)] == ["y", "b", "c", "a"]
    built[1] = ("base/a-second", [release("a", "c"), release("c", "a")])
    with pytest.raises(ReconcileError, match="HelmReleases a, c form a cycle"):
        _apply_order(built)
