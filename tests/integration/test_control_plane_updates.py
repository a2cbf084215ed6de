"""The control plane's update API against a real registry with published releases.

The cluster side is a stand-in: no Kubernetes API server runs on these machines, so a
small HTTP server records the server-side-apply PATCHes the control plane sends (what
it sends, in which order, with which token). Everything else is real.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consumer.kube import InCluster
from control_plane.service import ControlPlaneServer, ServiceSettings
from control_plane.updates import Updater, UpdateSettings
from ocicore.client import RegistryClient
from publisher.promote import promote
from publisher.signing import Signer
from tests.support.releases import publish_version, repo_config

pytestmark = pytest.mark.integration

SITE = {
    "hostname": "app.customer.example",
    "databaseHost": "db.customer.example",
    "smtpHost": "smtp.customer.example",
    "smtpFrom": "noreply@customer.example",
}


class _ApiServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.patches: list[tuple[str, str, dict[str, Any]]] = []


class _ApiHandler(BaseHTTPRequestHandler):
    server: _ApiServer

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.patches.append((self.path, self.headers["Authorization"], body))
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def api() -> Iterator[_ApiServer]:
    server = _ApiServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_check_and_apply_an_update(registry: object, api: _ApiServer, tmp_path: Path) -> None:
    host = registry.host  # type: ignore[attr-defined]
    signer = Signer(ec.generate_private_key(ec.SECP256R1()))
    config = repo_config()
    config = config.model_copy(
        update={"registry": config.registry.model_copy(update={"namespace": "cpupd"})}
    )
    with RegistryClient(host, credentials=None) as client:
        publish_version(client, config, "2.0.0", signer)
        promote(client, config, "2.0.0", "stable", signer, settle=0.01)
    (tmp_path / "trust.pem").write_bytes(signer.public_pem())
    (tmp_path / "site.yaml").write_text(json.dumps(SITE))
    (tmp_path / "token").write_text("s3cret-update-token\n")
    settings = UpdateSettings.from_environ(
        {
            "CONTROL_PLANE_REGISTRY": host,
            "CONTROL_PLANE_REPOSITORY": "cpupd/appliance-release",
            "CONTROL_PLANE_TRUST_FILE": str(tmp_path / "trust.pem"),
            "CONTROL_PLANE_SITE_FILE": str(tmp_path / "site.yaml"),
            "CONTROL_PLANE_TOKEN_FILE": str(tmp_path / "token"),
        }
    )
    assert settings is not None
    state = tmp_path / "state" / "state.json"
    cluster = InCluster(f"http://127.0.0.1:{api.server_address[1]}", "sa-token", None)
    updater = Updater(settings, state, cluster=lambda: cluster)
    service = ControlPlaneServer(
        ServiceSettings(port=0, bind="127.0.0.1", state_dir=state.parent, state_file=state), updater
    )
    threading.Thread(target=service.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{service.server_address[1]}"
    try:
        check = httpx.get(f"{url}/update", timeout=30).json()
        assert check["updateAvailable"] is True and check["available"]["version"] == "2.0.0"
        assert httpx.post(f"{url}/update", timeout=30).status_code == 401
        wrong = httpx.post(f"{url}/update", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and not state.exists()
        done = httpx.post(
            f"{url}/update", timeout=60, headers={"Authorization": "Bearer s3cret-update-token"}
        )
        assert done.status_code == 200, done.text
        assert done.json()["installed"]["version"] == "2.0.0"
        kinds = [body["kind"] for _, _, body in api.patches]
        assert kinds[:3] == ["Namespace"] * 3 and kinds[-2:] == ["OCIRepository", "Kustomization"]
        assert all(auth == "Bearer sa-token" for _, auth, _ in api.patches)
        assert all("fieldManager=appliance-release" in path for path, _, _ in api.patches)
        status = httpx.get(f"{url}/status").json()
        assert status["channels"]["stable"]["version"] == "2.0.0"
        assert httpx.get(f"{url}/update").json()["updateAvailable"] is False
        # the channel moves back: the control plane refuses to roll back
        with RegistryClient(host, credentials=None) as client:
            publish_version(client, config, "1.0.0", signer)
            promote(client, config, "1.0.0", "stable", signer, settle=0.01, allow_downgrade=True)
        refused = httpx.post(
            f"{url}/update", timeout=60, headers={"Authorization": "Bearer s3cret-update-token"}
        )
        assert refused.status_code == 409 and "older than the installed" in refused.json()["error"]
        assert json.loads(state.read_text())["channels"]["stable"]["version"] == "2.0.0"
    finally:
        service.shutdown()
