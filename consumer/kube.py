"""Server-side apply straight to the Kubernetes API, for the control plane in its pod.

The control-plane image carries no kubectl; inside the cluster it applies the install
plan itself: one ``PATCH`` per object with ``application/apply-patch+yaml`` (JSON is
valid YAML), ``fieldManager=appliance-release`` and ``force=true``, in the plan's
dependency order, authenticated with the pod's service-account token and verifying
the API server against the service-account CA. Only the kinds the plan contains are
mapped; anything else is a ``KubeApplyError``. Outside the cluster, ``consumer.render.apply``
(kubectl) does the same job.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from consumer.plan import InstallPlan
from ocicore.errors import ToolkitError

FIELD_MANAGER = "appliance-release"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: kind → (API group path, plural, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("api/v1", "namespaces", False),
    "ConfigMap": ("api/v1", "configmaps", True),
    "Secret": ("api/v1", "secrets", True),
    "OCIRepository": ("apis/source.toolkit.fluxcd.io/v1", "ocirepositories", True),
    "Kustomization": ("apis/kustomize.toolkit.fluxcd.io/v1", "kustomizations", True),
}


class KubeApplyError(ToolkitError):
    """The Kubernetes API refused an object, or cannot be reached."""


@dataclass(frozen=True)
class InCluster:
    """Where the API server is and how to authenticate to it."""

    server: str
    token: str
    ca_file: Path | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None,
                     account_dir: Path = SERVICE_ACCOUNT) -> InCluster:
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise KubeApplyError("not running in a Kubernetes pod (no KUBERNETES_SERVICE_HOST)",
                                 hint="use 'appliance-release apply' with a kubeconfig instead")
        try:
            token = (account_dir / "token").read_text().strip()
        except OSError as exc:
            raise KubeApplyError(f"cannot read the service-account token: {exc.strerror}",
                                 hint="mount the service account token (automount)") from None
        ca = account_dir / "ca.crt"
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        return cls(server, token, ca if ca.is_file() else None)


def object_path(doc: Mapping[str, Any]) -> str:
    """The API path of an object of the plan."""
    kind = str(doc.get("kind"))
    if kind not in RESOURCES:
        raise KubeApplyError(f"cannot apply kind {kind!r} through the API")
    prefix, plural, namespaced = RESOURCES[kind]
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if namespaced:
        return f"/{prefix}/namespaces/{meta.get('namespace')}/{plural}/{name}"
    return f"/{prefix}/{plural}/{name}"


def apply_in_cluster(plan: InstallPlan, cluster: InCluster,
                     http: httpx.Client | None = None) -> list[str]:
    """Apply every object in order; returns ``"<kind>/<name> applied"`` lines.

    Stops at the first refusal with a ``KubeApplyError`` naming the object and the API
    server's message; objects before it stay applied (each apply is idempotent, so a
    retry converges)."""
    verify: ssl.SSLContext | bool = True
    if cluster.ca_file is not None:
        verify = ssl.create_default_context(cafile=str(cluster.ca_file))
    client = http or httpx.Client(base_url=cluster.server, verify=verify, timeout=30)
    lines = []
    try:
        for doc in plan.to_dicts():
            path = object_path(doc)
            try:
                response = client.patch(
                    path, params={"fieldManager": FIELD_MANAGER, "force": "true"},
                    content=json.dumps(doc, sort_keys=True).encode(),
                    headers={"Content-Type": "application/apply-patch+yaml",
                             "Authorization": f"Bearer {cluster.token}"},
                )
            except httpx.HTTPError as exc:
                raise KubeApplyError(f"cannot reach the Kubernetes API at {cluster.server}: "
                                     f"{exc}", hint="check the pod's network") from None
            if response.status_code not in (200, 201):
                try:
                    message = str(response.json().get("message", ""))
                except ValueError:
                    message = response.text[:200]
                raise KubeApplyError(
                    f"applying {doc['kind']} {doc['metadata'].get('namespace', '')}/"
                    f"{doc['metadata']['name']} failed ({response.status_code}): {message}",
                    hint="check the control plane's RBAC (control_plane/deploy/rbac.yaml)")
            lines.append(f"{doc['kind']}/{doc['metadata']['name']} applied")
    finally:
        if http is None:
            client.close()
    return lines
