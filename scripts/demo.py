"""The main job, end to end on this repository's appliance, against a throwaway registry.

Starts a docker-registry with bearer-token auth (the test suite's token server, like
ghcr's flow), generates a signing key, publishes two versions (charts, Flux bundle, the
daemonlessly built control-plane image, release manifest, signature) and promotes them
to stable; then, as the appliance would: resolves stable, verifies every pinned
artifact, renders the install plan, reconciles offline (kustomize + helm template) and
prints a report. Everything goes through the ``appliance-release`` CLI. The registry is
stopped at the end; the work folder is kept under ./out/demo for inspection.

The application images (sebastian, workers, the mirrored pgbouncer/temporal) are built
by the application's own pipelines, not by this repository; the demo pushes small
stand-in artifacts under their names so that the release can lock their digests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ocicore.client import RegistryClient  # noqa: E402
from ocicore.credentials import Credentials  # noqa: E402
from tests.registry import TOKEN_PASSWORD, TOKEN_USER, token_registry  # noqa: E402
from tests.support.releases import push_app_images, repo_config  # noqa: E402

OUT = ROOT / "out" / "demo"
SITE = {"hostname": "app.customer.example", "databaseHost": "db.customer.example",
        "smtpHost": "smtp.customer.example", "smtpFrom": "noreply@customer.example"}


def cli(*args: str, env: dict[str, str]) -> dict[str, object]:
    """Run the CLI with --output json; stop the demo with its message on failure."""
    command = [str(ROOT / ".venv" / "bin" / "appliance-release"), "--output", "json", *args]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        sys.stderr.write(f"demo: `appliance-release {' '.join(args)}` failed "
                         f"(exit {proc.returncode}): {proc.stderr.strip()}\n")
        raise SystemExit(1)
    return dict(json.loads(proc.stdout)) if proc.stdout.strip().startswith("{") else {
        "items": json.loads(proc.stdout)}


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    with token_registry(OUT / "registry") as registry:
        host = registry.host
        env = {**os.environ, "APPLIANCE_RELEASE_USERNAME": TOKEN_USER,
               "APPLIANCE_RELEASE_PASSWORD": TOKEN_PASSWORD,
               "APPLIANCE_RELEASE_ACTOR": "demo@ci", "SOURCE_DATE_EPOCH": "1767225600"}
        say = lambda text: print(f"[{time.monotonic() - started:5.1f}s] {text}")  # noqa: E731
        say(f"registry with token auth at {host}")
        key = cli("keygen", "--out-dir", str(OUT / "keys"), env=env)
        say(f"signing key {key['keyid']}")
        config = repo_config()
        creds = Credentials(TOKEN_USER, TOKEN_PASSWORD, source="demo")
        with RegistryClient(host, credentials=creds) as client:
            for version in ("1.0.0", "1.1.0"):
                push_app_images(client, config, version)
        say("stand-in application images pushed (see the docstring)")
        common = ["--registry", host]
        signing = ["--key", str(OUT / "keys" / "release.key")]
        for version in ("1.0.0", "1.1.0"):
            published = cli(*common, "publish", "--version", version, "--channel", "nightly",
                            *signing, env=env)
            say(f"published {version} -> {published['digest']} (sequence "
                f"{published['sequence']}), nightly moved")
        for version in ("1.0.0", "1.1.0"):
            moved = cli(*common, "promote", version, "stable", *signing, env=env)
            say(f"promoted {version} to stable ({moved['outcome']})")
        history = cli(*common, "history", "stable", env=env)["items"]
        consumer = ["--repository", config.release_repository, "--trust",
                    str(OUT / "keys" / "release.pub")]
        (OUT / "site.yaml").write_text(json.dumps(SITE))
        site = ["--site", str(OUT / "site.yaml")]
        resolved = cli(*common, "resolve", "stable", *consumer, "--state",
                       str(OUT / "state.json"), env=env)
        verified = cli(*common, "verify", "stable", *consumer, env=env)
        rendered = cli(*common, "render", "stable", *consumer, *site, "--out",
                       str(OUT / "plan"), env=env)
        offline = cli(*common, "reconcile", "stable", *consumer, *site, "--workdir",
                      str(OUT / "offline"), env=env)
        control_plane = cli(*common, "control-plane-image", "stable", *consumer, env=env)
        say("resolved, verified, planned and reconciled stable as the appliance would")
    print()
    print(f"stable -> {resolved['version']} -> {resolved['digest']} "
          f"(sequence {resolved['sequence']}, signed by key {resolved['signedBy']})")
    print("history of stable:")
    for record in history:  # type: ignore[attr-defined]
        print(f"  {record['at']}  {record['from_version'] or '(none)':>6} -> "
              f"{record['to_version']}  by {record['by']}")
    print("artifacts (all verified in the registry):")
    for artifact in verified["artifacts"]:  # type: ignore[attr-defined]
        print(f"  {artifact['artifact']:<22} {artifact['digest']}  {artifact['reference']}")
    print(f"control plane for the host bootstrap: {control_plane['reference']}")
    print(f"install plan: {len(rendered['files'])} objects in {OUT / 'plan'}")  # type: ignore[arg-type]
    print(f"workloads ({len(offline['releases'])} releases) would run these images, "  # type: ignore[arg-type]
          "each pinned by the release:")
    for image in offline["images"]:  # type: ignore[attr-defined]
        print(f"  {image}")
    print(f"demo finished in {time.monotonic() - started:.1f}s; files under {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
