"""Registry operations of the ``appliance-release`` CLI: ``audit``, ``mirror``, ``import``
(registered through the ``appliance_release.commands`` entry-point group).

``audit`` exits 0 when nothing is wrong and 4 otherwise, printing the report (text or
``--output json``) and, on failure, the one-line summary on stderr.
"""

from __future__ import annotations

from pathlib import Path

import click

from consumer.cli import Settings, pass_settings
from consumer.signatures import TrustFileError, TrustStore
from consumer.verify import verify_release
from ocicore.client import RegistryClient
from ocicore.errors import InvalidInputError
from publisher.audit import AuditFailedError
from publisher.audit import audit as audit_registry
from publisher.cli import config_option
from publisher.mirror import (
    MirrorReport,
    import_archive,
    mirror_to_archive,
    resolve_selected,
)
from publisher.mirror import mirror as mirror_release
from publisher.progress import RichProgress
from publisher.release_config import ReleaseConfig, load_release_config

trust_option = click.option(
    "--trust", type=click.Path(path_type=Path), envvar="APPLIANCE_RELEASE_TRUST",
    required=True, help="PEM file of the trusted release signing public keys.")


def _trust(path: Path) -> TrustStore:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustFileError(f"cannot read the trust file {path}: {exc.strerror}") from None
    return TrustStore.from_pem(data, what=f"trust file {path}")


def _source(settings: Settings, config: ReleaseConfig, *, progress: bool) -> RegistryClient:
    """The registry of ``release.toml`` (``--registry`` overrides it)."""
    host = settings.registry or config.registry.host
    plain = settings.plain_http if settings.plain_http is not None else (
        True if config.registry.plain_http else None)
    return RegistryClient(host, plain_http=plain, ca_file=settings.ca_file,
                          docker_config=settings.docker_config,
                          progress=RichProgress() if progress and settings.output == "text"
                          else None)


def _destination(settings: Settings, host: str) -> RegistryClient:
    progress = RichProgress() if settings.output == "text" else None
    return RegistryClient(host, plain_http=settings.plain_http, ca_file=settings.ca_file,
                          docker_config=settings.docker_config, progress=progress)


@click.command()
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Requests in flight at once.")
@config_option
@trust_option
@pass_settings
def audit(settings: Settings, concurrency: int, config_path: Path, trust: Path) -> None:
    """Audit the namespace's releases, channels, signatures, locks and leftovers."""
    config = load_release_config(config_path)
    trusted = _trust(trust)
    with _source(settings, config, progress=False) as client:
        report = audit_registry(client, config, trusted, concurrency=concurrency)
    settings.emit(report.to_json(), report.text_lines)
    if not report.ok:
        raise AuditFailedError(report.summary(),
                               hint="see the findings above; nothing was changed")


@click.command()
@click.argument("selector", metavar="VERSION_OR_CHANNEL")
@click.option("--to", "to_host", help="Destination registry host[:port].")
@click.option("--to-archive", type=click.Path(dir_okay=False, path_type=Path),
              help="Destination OCI layout tar (added to when it exists).")
@click.option("--history", is_flag=True, help="Also copy the channel's promotion records.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Resolve and verify the release at the destination registry afterwards.")
@click.option("--concurrency", type=click.IntRange(1, 32), default=4, show_default=True)
@config_option
@trust_option
@pass_settings
def mirror(settings: Settings, selector: str, to_host: str | None, to_archive: Path | None,
           history: bool, verify: bool, concurrency: int, config_path: Path,
           trust: Path) -> None:
    """Copy a release (VERSION or CHANNEL) and everything it pins to another registry
    (--to) or into an archive (--to-archive), digests preserved."""
    if (to_host is None) == (to_archive is None):
        raise click.UsageError("give exactly one of --to HOST or --to-archive FILE")
    config = load_release_config(config_path)
    trusted = _trust(trust)
    with _source(settings, config, progress=True) as src, settings.pool(src) as others:
        report: MirrorReport
        if to_archive is not None:
            report = mirror_to_archive(src, config, selector, to_archive, trust=trusted,
                                       client_for=others, history=history,
                                       concurrency=concurrency)
        else:
            assert to_host is not None
            if to_host == src.registry:
                raise InvalidInputError(f"the destination {to_host} is the source registry",
                                        hint="mirror to another registry")
            with _destination(settings, to_host) as dst:
                report = mirror_release(src, config, selector, dst, trust=trusted,
                                        client_for=others, history=history,
                                        concurrency=concurrency)
                if verify:
                    with settings.pool(dst) as at_mirror:
                        resolved = resolve_selected(dst, config, selector, trusted)
                        checks = verify_release(resolved, at_mirror)
                    report.warnings += [] if str(resolved.digest) == report.digest else [
                        f"the mirror resolves {selector} to {resolved.digest}"]
                    click.echo(f"verified at {to_host}: {len(checks)} artifacts", err=True)
    settings.emit(report.to_json(), report.text_lines)


@click.command("import")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "to_host", required=True, help="Destination registry host[:port].")
@click.option("--concurrency", type=click.IntRange(1, 32), default=4, show_default=True)
@pass_settings
def import_command(settings: Settings, archive: Path, to_host: str, concurrency: int) -> None:
    """Push every release, artifact and tag of a mirror archive into a registry."""
    with _destination(settings, to_host) as dst:
        report = import_archive(archive, dst, concurrency=concurrency)
    settings.emit(report.to_json(), report.text_lines)
