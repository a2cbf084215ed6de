"""Publisher commands of the ``appliance-release`` CLI (registered through the
``appliance_release.commands`` entry-point group; see ``consumer.cli``)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import click

from consumer.cli import Settings, pass_settings
from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.tarpack import source_date_epoch
from publisher.control_plane_build import control_plane_builder
from publisher.progress import RichProgress
from publisher.promote import history as channel_history
from publisher.promote import promote as promote_release
from publisher.publish import PublishRequest, StepResult, check_version
from publisher.publish import publish as publish_release
from publisher.release_config import ReleaseConfig, load_release_config
from publisher.signing import Signer, generate_keypair, load_signer

ENV_KEY_PASSWORD = "APPLIANCE_RELEASE_KEY_PASSWORD"  # noqa: S105 (a variable name)

config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=Path("release.toml"),
    show_default=True, help="The release definition.")
key_option = click.option(
    "--key", type=click.Path(path_type=Path),
    help=f"Signing key (PEM); default: [signing].key of release.toml. Password: "
    f"${ENV_KEY_PASSWORD}.")


def _client(settings: Settings, config: ReleaseConfig) -> RegistryClient:
    host = settings.registry or config.registry.host
    plain = settings.plain_http if settings.plain_http is not None else (
        True if config.registry.plain_http else None)
    progress = RichProgress() if settings.output == "text" else None
    return RegistryClient(host, plain_http=plain, ca_file=settings.ca_file,
                          docker_config=settings.docker_config, progress=progress)


def _signer(config: ReleaseConfig, key: Path | None, root: Path) -> Signer:
    password = os.environ.get(ENV_KEY_PASSWORD)
    return load_signer(key or root / config.signing.key,
                       password.encode() if password else None)


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@click.command()
@click.option("--version", "version", required=True, help="Release version (SemVer).")
@click.option("--channel", help="Promote to this channel after publishing (e.g. nightly).")
@click.option("--image-tag", multiple=True, metavar="KEY=TAG",
              help="Tag of an application image built for this release (repeatable).")
@click.option("--source-repository", help="Source URL (default: git remote origin).")
@click.option("--source-revision", help="Source revision (default: <branch>@sha1:<commit>).")
@click.option("--dry-run", is_flag=True, help="Print the plan and digests; write nothing.")
@click.option("--no-lint", is_flag=True, help="Skip helm lint.")
@config_option
@key_option
@pass_settings
def publish(settings: Settings, version: str, channel: str | None, image_tag: tuple[str, ...],
            source_repository: str | None, source_revision: str | None, dry_run: bool,
            no_lint: bool, config_path: Path, key: Path | None) -> None:
    """Publish a release: charts, bundle, control-plane image, manifest, signature."""
    config = load_release_config(config_path)
    check_version(version)
    root = config_path.resolve().parent
    tags = {}
    for item in image_tag:
        name, sep, tag = item.partition("=")
        if not sep or name not in config.images:
            raise click.BadParameter(f"{item!r}: expected KEY=TAG with KEY one of "
                                     f"{sorted(config.images)}", param_hint="--image-tag")
        tags[name] = tag
    epoch = source_date_epoch()
    commit = _git(root, "rev-parse", "HEAD") or "0" * 40
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD") or "main"
    signer = _signer(config, key, root)
    # never the build machine's path: it would make the image digest machine-dependent
    source = source_repository or _git(root, "remote", "get-url", "origin") or "unknown"
    with _client(settings, config) as client:
        request = PublishRequest(
            config=config, root=root, registry=client.registry, version=version,
            source_repository=source,
            source_revision=source_revision or f"{branch}@sha1:{commit}",
            signer=signer,
            build_control_plane=control_plane_builder(root, config, version=version,
                                                      revision=commit, epoch=epoch,
                                                      source=source),
            image_tags=tags, plain_http=bool(settings.plain_http or config.registry.plain_http),
            epoch=epoch, created=datetime.fromtimestamp(epoch, UTC)
            if "SOURCE_DATE_EPOCH" in os.environ else None,
            channel=channel, lint=not no_lint,
        )

        def show(step: StepResult) -> None:
            if settings.output == "text":
                click.echo(f"{step.step:<9} {step.outcome:<10} {step.digest}  {step.reference}")

        report = publish_release(client, request, dry_run=dry_run, on_step=show)
        promoted = None
        if channel and not dry_run:
            promoted = promote_release(client, config, version, channel, signer)
    settings.emit(
        {"version": version, "digest": str(report.digest), "sequence": report.sequence,
         "dryRun": dry_run, "steps": [s.__dict__ for s in report.steps],
         "channel": channel if promoted else None},
        lambda: [f"release {version} {'would be' if dry_run else 'is'} {report.digest} "
                 f"(sequence {report.sequence})"]
        + ([f"{channel} -> {version} ({promoted.outcome})"] if promoted else []),
    )


@click.command()
@click.argument("version")
@click.argument("channel")
@click.option("--expect-current", help="Only move the channel if it points at this digest.")
@click.option("--allow-downgrade", is_flag=True, help="Allow moving to a lower version.")
@click.option("--settle", type=float, default=1.0, show_default=True,
              help="Seconds to wait before reading a claim back (race detection).")
@config_option
@key_option
@pass_settings
def promote(settings: Settings, version: str, channel: str, expect_current: str | None,
            allow_downgrade: bool, settle: float, config_path: Path, key: Path | None) -> None:
    """Move CHANNEL to release VERSION (verified, signed, compare-and-swap)."""
    config = load_release_config(config_path)
    signer = _signer(config, key, config_path.resolve().parent)
    expected = Digest.parse(expect_current) if expect_current else None
    with _client(settings, config) as client:
        result = promote_release(client, config, version, channel, signer,
                                 expect_current=expected, allow_downgrade=allow_downgrade,
                                 settle=settle)
    settings.emit(
        {"channel": channel, "version": version, "digest": str(result.digest),
         "previous": str(result.previous) if result.previous else None,
         "outcome": result.outcome},
        lambda: [f"{channel}: {result.previous or '(none)'} -> {result.digest} ({version}, "
                 f"{result.outcome})"],
    )


@click.command()
@click.argument("channel")
@config_option
@pass_settings
def history(settings: Settings, channel: str, config_path: Path) -> None:
    """List the promotions of CHANNEL (time, from, to, by whom)."""
    config = load_release_config(config_path)
    with _client(settings, config) as client:
        records = channel_history(client, config, channel)
    settings.emit([r.__dict__ for r in records], lambda: [
        f"{r.at}  {r.from_version or '(none)':>10} -> {r.to_version:<10} {r.to_digest}  by {r.by}"
        for r in records] or [f"{channel}: no promotions recorded"])


@click.command()
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("keys"),
              show_default=True)
@click.option("--name", default="release", show_default=True)
@click.option("--password-from-env", is_flag=True,
              help=f"Encrypt the private key with ${ENV_KEY_PASSWORD}.")
@pass_settings
def keygen(settings: Settings, out_dir: Path, name: str, password_from_env: bool) -> None:
    """Write an ECDSA P-256 signing key pair (NAME.key, NAME.pub)."""
    password = None
    if password_from_env:
        value = os.environ.get(ENV_KEY_PASSWORD)
        if not value:
            raise click.UsageError(f"--password-from-env needs ${ENV_KEY_PASSWORD}")
        password = value.encode()
    signer = generate_keypair(out_dir / f"{name}.key", out_dir / f"{name}.pub", password)
    settings.emit({"keyid": signer.keyid, "private": str(out_dir / f"{name}.key"),
                   "public": str(out_dir / f"{name}.pub")},
                  lambda: [f"key {signer.keyid}: {out_dir / name}.key (private), "
                           f"{out_dir / name}.pub (public, for the appliance's trust file)"])
