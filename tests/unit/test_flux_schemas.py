"""The Flux objects we write validate against Flux's own CRD schemas.

The schemas are each CRD's ``openAPIV3Schema`` for the served version we use, read from
the copies in ``tests/data/flux-crds`` (origin, commits and licence in its SOURCE.md),
so the test runs on a clone alone. They are checked with a JSON Schema (Draft 7)
validator; the ``x-kubernetes-*`` keywords are ignored by it. Two checks the API server
makes are added here: ``apiVersion``/``kind``/``metadata.name`` (a DNS subdomain) and
``metadata.namespace``, and strict field validation (what ``kubectl apply`` asks for by
default): an object schema with ``properties`` and without
``x-kubernetes-preserve-unknown-fields`` refuses unknown fields.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from consumer.plan import plan_install
from ocicore.digest import Digest
from publisher.bundle import BundleInputs, ChartPin, render_bundle
from tests.unit.test_plan import manifest_document, resolved_release, site

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "tests" / "data" / "flux-crds"
SCHEMAS = {
    ("source.toolkit.fluxcd.io/v1", "OCIRepository"):
        ("source.toolkit.fluxcd.io_ocirepositories.yaml", "v1"),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"):
        ("kustomize.toolkit.fluxcd.io_kustomizations.yaml", "v1"),
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"):
        ("helm.toolkit.fluxcd.io_helmreleases.yaml", "v2"),
}
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) if key not in ("enum", "default", "example") else value
           for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def validator(api_version: str, kind: str) -> Draft7Validator:
    file, version = SCHEMAS[(api_version, kind)]
    crd = yaml.safe_load((CRDS / file).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    assert f"{crd['spec']['group']}/{version}" == api_version
    served = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    assert len(served) == 1, f"{file} does not serve {version}"
    schema = _strict(served[0]["schema"]["openAPIV3Schema"])
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def problems(doc: dict[str, Any]) -> list[str]:
    """Every reason the API server would refuse ``doc`` (empty when it is valid)."""
    found = []
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if (api_version, kind) not in SCHEMAS:
        return [f"no schema for {api_version} {kind}"]
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: required"]
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        found.append(f"metadata.name {name!r}: not a DNS subdomain")
    if not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace):
        found.append(f"metadata.namespace {namespace!r}: required, a DNS label")
    for error in validator(str(api_version), str(kind)).iter_errors(doc):
        path = ".".join(str(p) for p in error.absolute_path) or "(top)"
        found.append(f"{path}: {error.message}")
    return found


def _flux_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if (d.get("apiVersion"), d.get("kind")) in SCHEMAS]


def test_the_crd_copies_are_the_served_versions_we_write() -> None:
    for api_version, kind in SCHEMAS:
        assert validator(api_version, kind)


def test_plan_source_and_kustomization_validate() -> None:
    plain = plan_install(resolved_release(manifest_document()), site())
    pem = (
        "-----BEGIN PUBLIC KEY-----\n"
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAER5a3rwmyVAtjgXK9lSXQDZwfPLSN\n"
        "KWnNisaO9eb0gmK6F7huzsRVTOj0XuBykMZuJXCFveJxkxy+lJ2ecER3tg==\n"
        "-----END PUBLIC KEY-----\n")
    full = plan_install(resolved_release(manifest_document(), registry="mirror.example:5000"),
                        site(plainHttp=True, cosignPublicKey=pem, interval="1h30m",
                             timeout="45s"))
    for plan in (plain, full):
        objects = _flux_objects(plan.to_dicts())
        assert sorted(d["kind"] for d in objects) == ["Kustomization", "OCIRepository"]
        for doc in objects:
            assert problems(doc) == [], doc["kind"]


def _rendered_bundle() -> list[dict[str, Any]]:
    charts = sorted(p.name for p in (ROOT / "charts").iterdir() if (p / "Chart.yaml").is_file())
    pins = {c: ChartPin(c, "1.0.0+build.1", Digest.of(c.encode())) for c in charts}
    rendered = render_bundle(BundleInputs(
        flux_dir=ROOT / "flux", registry="registry.example.com:5000",
        charts_repository="alga/charts", charts=pins, values_profile="single-node",
        plain_http=True, source="https://example.invalid/alga", revision="0" * 40, epoch=0))
    docs = []
    for path, data in sorted(rendered.files.items()):
        if path.startswith("base/") and path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(data) if d]
    return docs


def test_bundle_helmreleases_and_flux_objects_validate() -> None:
    objects = _flux_objects(_rendered_bundle())
    kinds = [d["kind"] for d in objects]
    assert kinds.count("HelmRelease") == 6
    assert kinds.count("OCIRepository") == 6 and kinds.count("Kustomization") == 3
    for doc in objects:
        assert problems(doc) == [], f"{doc['kind']} {doc['metadata']['name']}"


@pytest.mark.parametrize(("kind", "change", "fragment"), [
    ("OCIRepository", lambda s: s.pop("url"), "'url' is a required property"),
    ("OCIRepository", lambda s: s.update(interval="10 minutes"), "interval: '10 minutes' does"),
    ("OCIRepository", lambda s: s.update(url="https://x"), "url: 'https://x' does not match"),
    ("OCIRepository", lambda s: s.update(veriffy={}), "'veriffy' was unexpected"),
    ("OCIRepository", lambda s: s.update(verify={"provider": "gpg"}), "'gpg' is not one of"),
    ("Kustomization", lambda s: s.pop("sourceRef"), "'sourceRef' is a required property"),
    ("Kustomization", lambda s: s.update(prune="yes"), "prune: 'yes' is not of type 'boolean'"),
    ("Kustomization", lambda s: s["sourceRef"].update(kind="Bucket2"), "'Bucket2' is not one"),
])
def test_the_validator_catches_mistakes(kind: str, change: Any, fragment: str) -> None:
    plan = plan_install(resolved_release(manifest_document()), site())
    doc = next(d for d in plan.to_dicts() if d["kind"] == kind)
    change(doc["spec"])
    assert any(fragment in p for p in problems(doc)), problems(doc)


def test_the_validator_catches_helmrelease_mistakes() -> None:
    release = next(d for d in _rendered_bundle() if d["kind"] == "HelmRelease")
    release["spec"]["chartRef"]["kind"] = "GitRepository"
    release["spec"]["install"]["remediation"]["retries"] = "three"
    del release["metadata"]["namespace"]
    found = problems(release)
    assert any("'GitRepository' is not one of" in p for p in found), found
    assert any("'three' is not of type 'integer'" in p for p in found), found
    assert any("metadata.namespace None" in p for p in found), found
