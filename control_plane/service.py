"""The control plane's HTTP service: health, readiness and the installed release.

A small ``http.server.ThreadingHTTPServer`` (standard library only, so the image needs
nothing beyond what ``consumer`` already imports). Endpoints, all answering JSON:

``GET /healthz``   200 ``{"status": "ok"}`` while the process serves requests (liveness).
``GET /readyz``    200 ``{"status": "ready"}`` when the state directory is writable (a
                   file can be created in it), else 503 with the reason (readiness).
``GET /status``    200 with the installed release per channel, read from the consumer's
                   anti-rollback state file (``consumer.state``); a state file that
                   exists but is damaged is a 500 naming the problem and the fix.
``GET /update``    the configured channel's release (resolved, signature-checked) and
                   whether it differs from the installed one (``control_plane.updates``).
``POST /update``   resolve, verify, plan and apply the channel's release to the cluster,
                   then record it; needs ``Authorization: Bearer <token>``. 404 with a
                   reason when updates are not configured (no ``CONTROL_PLANE_REGISTRY``).

Everything else is 404 (unknown path) or 405 (known path, other method). Settings come
from the environment (``ServiceSettings.from_environ``); logs are JSON lines on stderr,
one per request and one per lifecycle event.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from consumer.state import StateFileError, load_state
from control_plane.updates import Updater
from ocicore.errors import InvalidInputError

log = logging.getLogger("control_plane")

DEFAULT_PORT = 8080
DEFAULT_BIND = "0.0.0.0"  # noqa: S104 - a container's service listens on all its interfaces
DEFAULT_STATE_DIR = "/var/lib/control-plane"
STATE_FILE_NAME = "state.json"
SERVER_NAME = "appliance-control-plane"


class SettingsError(InvalidInputError):
    """An environment variable of the service holds an invalid value."""


@dataclass(frozen=True)
class ServiceSettings:
    """Where the service listens and where its state lives.

    From the environment: ``CONTROL_PLANE_PORT`` (default 8080), ``CONTROL_PLANE_BIND``
    (default ``0.0.0.0``), ``CONTROL_PLANE_STATE_DIR`` (default ``/var/lib/control-plane``)
    and ``CONTROL_PLANE_STATE_FILE`` (default ``<state dir>/state.json``).
    """

    port: int = DEFAULT_PORT
    bind: str = DEFAULT_BIND
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    state_file: Path = Path(DEFAULT_STATE_DIR) / STATE_FILE_NAME

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Read the settings; raises ``SettingsError`` for a port that is not 0..65535."""
        env = os.environ if environ is None else environ
        port_text = env.get("CONTROL_PLANE_PORT", "") or str(DEFAULT_PORT)
        if not port_text.isdigit() or int(port_text) > 65535:
            raise SettingsError(
                f"CONTROL_PLANE_PORT={port_text[:20]!r} is not a TCP port",
                hint="set it to a number between 1 and 65535 (0 picks a free one)",
            )
        state_dir = Path(env.get("CONTROL_PLANE_STATE_DIR", "") or DEFAULT_STATE_DIR)
        state_file = env.get("CONTROL_PLANE_STATE_FILE", "")
        return cls(
            port=int(port_text),
            bind=env.get("CONTROL_PLANE_BIND", "") or DEFAULT_BIND,
            state_dir=state_dir,
            state_file=Path(state_file) if state_file else state_dir / STATE_FILE_NAME,
        )


# -- logging ------------------------------------------------------------------------------


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``event`` and the
    record's ``fields`` (passed as ``extra={"fields": {...}}``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ).replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=True, default=str)


def configure_logging(stream: Any = None, level: int = logging.INFO) -> None:
    """Send this package's logs to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


# -- the endpoints ------------------------------------------------------------------------

Response = tuple[int, dict[str, Any]]


def healthz(settings: ServiceSettings) -> Response:
    return 200, {"status": "ok"}


def readyz(settings: ServiceSettings) -> Response:
    """Ready when a file can be created in the state directory (``os.access`` is not
    enough: it does not see every read-only mount or full disk)."""
    try:
        fd, name = tempfile.mkstemp(dir=settings.state_dir, prefix=".readyz-")
    except OSError as exc:
        reason = f"state directory {settings.state_dir} is not writable: {exc.strerror}"
        return 503, {"status": "not-ready", "reason": reason}
    os.close(fd)
    os.unlink(name)
    return 200, {"status": "ready"}


def status(settings: ServiceSettings) -> Response:
    try:
        state = load_state(settings.state_file)
    except StateFileError as exc:
        return 500, {"error": exc.message, "hint": exc.hint}
    channels = {
        name: release.model_dump(mode="json", by_alias=True)
        for name, release in sorted(state.channels.items())
    }
    return 200, {"stateFile": str(settings.state_file), "channels": channels}


_NO_UPDATES = (404, {"error": "updates are not configured on this control plane",
                     "hint": "set CONTROL_PLANE_REGISTRY and the related variables"})


def update_check(server: ControlPlaneServer, headers: Message) -> Response:
    return server.updater.check() if server.updater is not None else _NO_UPDATES


def update_apply(server: ControlPlaneServer, headers: Message) -> Response:
    if server.updater is None:
        return _NO_UPDATES
    refused = server.updater.authorised(headers.get("Authorization"))
    return refused if refused is not None else server.updater.apply()


def _settings_only(handler: Callable[[ServiceSettings], Response]) -> Route:
    return lambda server, headers: handler(server.settings)


Route = Callable[["ControlPlaneServer", Message], Response]
ROUTES: dict[str, dict[str, Route]] = {
    "/healthz": {"GET": _settings_only(healthz)},
    "/readyz": {"GET": _settings_only(readyz)},
    "/status": {"GET": _settings_only(status)},
    "/update": {"GET": update_check, "POST": update_apply},
}


class ControlPlaneHandler(BaseHTTPRequestHandler):
    """Dispatches to ``ROUTES``; the server carries the settings."""

    server: ControlPlaneServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        path = self.path.split("?", 1)[0]
        methods = ROUTES.get(path)
        allow = ""
        if methods is None:
            code, body = 404, {"error": f"no such endpoint {path[:100]}"}
        elif method not in methods:
            allow = ", ".join(sorted(methods))
            code, body = 405, {"error": f"{path} does not accept {method}; use {allow}"}
        else:
            try:
                code, body = methods[method](self.server, self.headers)
            except Exception:
                log.exception("handler failed", extra={"fields": {"path": path}})
                code, body = 500, {"error": "internal error; see the service log"}
        self._discard_body()
        payload = json.dumps(body, sort_keys=True).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        self.wfile.write(payload)
        log.info("request", extra={"fields": {
            "method": method, "path": path[:200], "status": code,
            "durationMs": round((time.monotonic() - started) * 1000, 1),
            "client": self.client_address[0],
        }})

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if length.isdigit() and 0 < int(length) <= 1 << 20:
            self.rfile.read(int(length))
        elif length not in ("", "0"):
            self.close_connection = True

    def version_string(self) -> str:
        return SERVER_NAME

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are logged once, as JSON, by ``_dispatch``."""

    def log_message(self, format: str, *args: Any) -> None:
        # What http.server reports itself: malformed requests, unsupported methods.
        log.warning("http", extra={"fields": {"detail": format % args}})


class ControlPlaneServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, settings: ServiceSettings, updater: Updater | None = None) -> None:
        super().__init__((settings.bind, settings.port), ControlPlaneHandler)
        self.settings = settings
        self.updater = updater


def serve(settings: ServiceSettings, updater: Updater | None = None) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code (0 after a clean stop)."""
    try:
        server = ControlPlaneServer(settings, updater)
    except OSError as exc:
        log.error("cannot listen", extra={"fields": {
            "bind": settings.bind, "port": settings.port, "error": exc.strerror}})
        return 1
    host, port = server.server_address[:2]

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        # shutdown() waits for serve_forever() to return, so not from its own thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening", extra={"fields": {
        "bind": str(host), "port": port, "stateDir": str(settings.state_dir), "pid": os.getpid()}})
    with server:
        server.serve_forever()
    log.info("stopped")
    return 0
