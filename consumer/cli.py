"""The ``appliance-release`` command line (thin over the library).

Appliance-side commands live here so that they work with only ``consumer`` and
``ocicore`` installed. Publisher commands are added at run time from the
``appliance_release.commands`` entry-point group when the publisher is installed,
so no layer imports a layer above it.

Exit codes: 0 success; 1 other error; 2 invalid input or usage; 3 registry error
(auth, not found, unreachable); 4 integrity (digest or size mismatch, verification
failed); 5 signature not trusted; 6 rollback refused; 7 immutable version tag
changed; 8 promotion refused; 9 promotion race lost; 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from consumer.plan import plan_install
from consumer.reconcile import reconcile_offline
from consumer.render import apply, diff, diff_cluster, manifest_stream, render
from consumer.resolve import ResolvedRelease, Resolver
from consumer.signatures import TrustFileError, TrustStore
from consumer.site import SiteError, SiteSettings, read_site
from consumer.tools import Kubectl
from consumer.verify import verify_release
from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.errors import ToolkitError
from ocicore.pool import ClientPool

ENV_REPOSITORY = "APPLIANCE_RELEASE_REPOSITORY"


@dataclass
class Settings:
    """The global options, shared by every command."""

    registry: str | None
    plain_http: bool | None
    ca_file: Path | None
    docker_config: Path | None
    output: str
    debug: bool

    def client(self, registry: str | None = None) -> RegistryClient:
        host = registry or self.registry
        if not host:
            raise click.UsageError("no registry given: pass --registry (or set "
                                   "APPLIANCE_RELEASE_REGISTRY_URL)")
        return RegistryClient(host, plain_http=self.plain_http, ca_file=self.ca_file,
                              docker_config=self.docker_config)

    def pool(self, seed: RegistryClient) -> ClientPool:
        return ClientPool(self.client, seed)

    def emit(self, document: Any, text: Callable[[], list[str]]) -> None:
        """Print ``document`` as JSON (``--output json``) or ``text()`` lines."""
        if self.output == "json":
            click.echo(json.dumps(document, indent=2, sort_keys=True))
        else:
            for line in text():
                click.echo(line)


pass_settings = click.make_pass_decorator(Settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--registry", envvar="APPLIANCE_RELEASE_REGISTRY_URL",
              help="Registry host[:port], e.g. ghcr.io or 127.0.0.1:5000.")
@click.option("--plain-http", is_flag=True, default=None,
              help="Talk plain HTTP (unencrypted). Loopback registries need no flag.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Extra CA bundle (PEM) to trust for the registry's TLS certificate.")
@click.option("--docker-config", type=click.Path(path_type=Path),
              help="Docker config file or folder for credentials (default ~/.docker).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--debug", is_flag=True, help="Log every request and show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, registry: str | None, plain_http: bool | None,
        ca_file: Path | None, docker_config: Path | None, output: str, debug: bool) -> None:
    """Ship an on-prem Kubernetes appliance through an OCI registry."""
    ctx.obj = Settings(registry, plain_http or None, ca_file, docker_config, output, debug)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _trust(path: Path | None) -> TrustStore:
    if path is None:
        raise click.UsageError("no trust file: pass --trust (PEM public keys of the release "
                               "signers)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustFileError(f"cannot read the trust file {path}: {exc.strerror}") from None
    return TrustStore.from_pem(data, what=f"trust file {path}")


def release_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every consumer command shares: where releases are and whom to trust."""
    func = click.option("--repository", envvar=ENV_REPOSITORY, required=True,
                        help=f"Release repository, e.g. alga/appliance-release "
                        f"(env {ENV_REPOSITORY}).")(func)
    func = click.option("--trust", type=click.Path(path_type=Path),
                        envvar="APPLIANCE_RELEASE_TRUST",
                        help="PEM file of trusted signing public keys.")(func)
    func = click.option("--state", type=click.Path(path_type=Path),
                        envvar="APPLIANCE_RELEASE_STATE",
                        help="Anti-rollback state file (what this appliance installed).")(func)
    return func


def selector_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.argument("channel", required=False)(func)
    func = click.option("--version", "version", help="Select a release by version.")(func)
    func = click.option("--digest", help="Select a release by manifest digest.")(func)
    func = click.option("--allow-downgrade", is_flag=True,
                        help="Accept a channel that moved back (operator override).")(func)
    return func


def resolve_selected(settings: Settings, client: RegistryClient, repository: str,
                     trust: Path | None, state: Path | None, channel: str | None,
                     version: str | None, digest: str | None,
                     allow_downgrade: bool) -> tuple[Resolver, ResolvedRelease]:
    chosen = [x for x in (channel, version, digest) if x]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of CHANNEL, --version or --digest")
    resolver = Resolver(client, repository, _trust(trust), state_path=state)
    if channel:
        return resolver, resolver.resolve_channel(channel, allow_downgrade=allow_downgrade)
    if version:
        return resolver, resolver.resolve_version(version)
    return resolver, resolver.resolve_digest(Digest.parse(str(digest)))


def describe(resolved: ResolvedRelease) -> dict[str, Any]:
    manifest = resolved.manifest
    return {
        "registry": resolved.registry,
        "repository": resolved.repository,
        "selector": resolved.selector,
        "channel": resolved.channel,
        "version": manifest.version,
        "sequence": manifest.sequence,
        "digest": str(resolved.digest),
        "signedBy": resolved.binding.keyid,
        "controlPlane": str(resolved.locate(manifest.control_plane))
        if manifest.control_plane and "@" in manifest.control_plane else manifest.control_plane,
        "images": manifest.images.by_key(),
    }


@cli.command()
@selector_options
@release_options
@pass_settings
def resolve(settings: Settings, channel: str | None, version: str | None, digest: str | None,
            allow_downgrade: bool, repository: str, trust: Path | None,
            state: Path | None) -> None:
    """Resolve a channel (or --version/--digest) to a verified, signed release."""
    with settings.client() as client:
        _, resolved = resolve_selected(settings, client, repository, trust, state, channel,
                                       version, digest, allow_downgrade)
    info = describe(resolved)
    settings.emit(info, lambda: [
        f"{info['selector']} -> {info['version']} (sequence {info['sequence']}) {info['digest']}",
        f"signed by key {info['signedBy']}",
        f"control plane {info['controlPlane']}",
    ])


@cli.command()
@selector_options
@release_options
@pass_settings
def verify(settings: Settings, channel: str | None, version: str | None, digest: str | None,
           allow_downgrade: bool, repository: str, trust: Path | None,
           state: Path | None) -> None:
    """Check that every artifact the release pins is in the registry with its digest."""
    with settings.client() as client, settings.pool(client) as pool:
        _, resolved = resolve_selected(settings, client, repository, trust, state, channel,
                                       version, digest, allow_downgrade)
        checks = verify_release(resolved, pool)
    document = {**describe(resolved), "artifacts": [
        {"artifact": c.artifact, "reference": c.reference, "digest": str(c.expected)}
        for c in checks]}
    settings.emit(document, lambda: [
        f"{resolved.manifest.version} {resolved.digest}: {len(checks)} artifacts verified",
        *(f"  {c.artifact:<24} {c.expected}  {c.reference}" for c in checks),
    ])


@cli.command("control-plane-image")
@click.argument("channel")
@click.option("--allow-downgrade", is_flag=True, help="Accept a channel that moved back.")
@release_options
@pass_settings
def control_plane_image(settings: Settings, channel: str, allow_downgrade: bool,
                        repository: str, trust: Path | None, state: Path | None) -> None:
    """Print the channel-pinned control-plane image reference (repo@sha256:…)."""
    with settings.client() as client:
        _, resolved = resolve_selected(settings, client, repository, trust, state, channel,
                                       None, None, allow_downgrade)
    reference = resolved.manifest.control_plane
    if not reference or "@" not in reference:
        raise ToolkitError(f"release {resolved.manifest.version} does not pin its control-plane "
                           "image by digest", hint="publish it with a current publisher")
    located = str(resolved.locate(reference))
    settings.emit({"reference": located, "version": resolved.manifest.version,
                   "digest": str(resolved.digest)}, lambda: [located])


def _site(path: Path | None) -> SiteSettings:
    if path is None:
        raise click.UsageError("no site settings: pass --site (YAML: hostname, …)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SiteError(f"cannot read the site settings {path}: {exc.strerror}") from None
    return read_site(data, what=f"site settings {path}")


def site_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--site", type=click.Path(path_type=Path),
                        envvar="APPLIANCE_RELEASE_SITE",
                        help="Site settings (YAML): hostname, database/SMTP hosts, tenant.")(func)


def kube_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--kubeconfig", type=click.Path(path_type=Path),
                        help="kubeconfig for the appliance's cluster.")(func)
    func = click.option("--context", help="kubeconfig context.")(func)
    return func


@cli.command()
@selector_options
@release_options
@site_option
@pass_settings
def plan(settings: Settings, channel: str | None, version: str | None, digest: str | None,
         allow_downgrade: bool, repository: str, trust: Path | None, state: Path | None,
         site: Path | None) -> None:
    """Print the install plan (Flux objects, values and selection ConfigMaps) as YAML."""
    site_settings = _site(site)
    with settings.client() as client:
        _, resolved = resolve_selected(settings, client, repository, trust, state, channel,
                                       version, digest, allow_downgrade)
    install = plan_install(resolved, site_settings)
    if settings.output == "json":
        click.echo(json.dumps(install.to_dicts(), indent=2, sort_keys=True))
    else:
        click.echo(manifest_stream(install).decode(), nl=False)


@cli.command("render")
@selector_options
@release_options
@site_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Directory to write one YAML file per object into (must be empty).")
@click.option("--overwrite", is_flag=True, help="Replace the directory's content.")
@pass_settings
def render_command(settings: Settings, channel: str | None, version: str | None,
                   digest: str | None, allow_downgrade: bool, repository: str,
                   trust: Path | None, state: Path | None, site: Path | None, out_dir: Path,
                   overwrite: bool) -> None:
    """Write the install plan as YAML files (what apply would apply)."""
    site_settings = _site(site)
    with settings.client() as client:
        _, resolved = resolve_selected(settings, client, repository, trust, state, channel,
                                       version, digest, allow_downgrade)
    written = render(plan_install(resolved, site_settings), out_dir, overwrite=overwrite)
    settings.emit({"directory": str(out_dir), "files": [p.name for p in written]},
                  lambda: [f"wrote {len(written)} objects to {out_dir}"])


@cli.command("apply")
@selector_options
@release_options
@site_option
@kube_options
@pass_settings
def apply_command(settings: Settings, channel: str | None, version: str | None,
                  digest: str | None, allow_downgrade: bool, repository: str,
                  trust: Path | None, state: Path | None, site: Path | None,
                  kubeconfig: Path | None, context: str | None) -> None:
    """Verify, then apply the install plan with kubectl (server-side) and record the
    installed release in the anti-rollback state."""
    site_settings = _site(site)
    with settings.client() as client, settings.pool(client) as pool:
        resolver, resolved = resolve_selected(settings, client, repository, trust, state,
                                              channel, version, digest, allow_downgrade)
        verify_release(resolved, pool)
    install = plan_install(resolved, site_settings)
    output = apply(install, Kubectl(kubeconfig=kubeconfig, context=context))
    resolver.record_installed(resolved)
    settings.emit({"version": resolved.manifest.version, "digest": str(resolved.digest),
                   "kubectl": output},
                  lambda: [*output.splitlines(),
                           f"installed {resolved.manifest.version} ({resolved.digest})"])


@cli.command("diff")
@selector_options
@release_options
@site_option
@kube_options
@click.option("--against", type=click.Path(path_type=Path),
              help="A rendered directory to compare with (default: the cluster).")
@pass_settings
def diff_command(settings: Settings, channel: str | None, version: str | None,
                 digest: str | None, allow_downgrade: bool, repository: str,
                 trust: Path | None, state: Path | None, site: Path | None,
                 kubeconfig: Path | None, context: str | None, against: Path | None) -> None:
    """Show what applying the plan would change (in a directory or the cluster)."""
    site_settings = _site(site)
    with settings.client() as client:
        _, resolved = resolve_selected(settings, client, repository, trust, state, channel,
                                       version, digest, allow_downgrade)
    install = plan_install(resolved, site_settings)
    if against is not None:
        result = diff(install, against)
        settings.emit({"added": result.added, "removed": result.removed,
                       "changed": result.changed},
                      lambda: result.lines() or ["no differences"])
        return
    cluster = diff_cluster(install, Kubectl(kubeconfig=kubeconfig, context=context))
    click.echo(cluster.output or "no differences", nl=False)


@cli.command("reconcile")
@selector_options
@release_options
@site_option
@click.option("--workdir", type=click.Path(path_type=Path), required=True,
              help="Directory for the bundle, charts and rendered manifests (must not exist "
              "or be empty).")
@pass_settings
def reconcile_command(settings: Settings, channel: str | None, version: str | None,
                      digest: str | None, allow_downgrade: bool, repository: str,
                      trust: Path | None, state: Path | None, site: Path | None,
                      workdir: Path) -> None:
    """Render offline exactly what the appliance would run (kustomize + helm template)
    and check that every container image is one the release pins."""
    site_settings = _site(site)
    with settings.client() as client, settings.pool(client) as pool:
        _, resolved = resolve_selected(settings, client, repository, trust, state, channel,
                                       version, digest, allow_downgrade)
        result = reconcile_offline(resolved, site_settings, pool, workdir)
    settings.emit({"directory": str(result.directory), "images": list(result.images),
                   "releases": list(result.releases)},
                  lambda: [f"rendered {len(result.manifests)} objects of "
                           f"{len(result.releases)} releases into {result.directory}",
                           "images (all pinned by the release):",
                           *(f"  {image}" for image in result.images)])


def _load_plugin_commands() -> None:
    """Add the publisher's commands when it is installed; an appliance (consumer and
    ocicore only) simply has fewer commands."""
    for ep in entry_points(group="appliance_release.commands"):
        try:
            command = ep.load()
        except ImportError as exc:
            logging.getLogger(__name__).debug("command %s unavailable: %s", ep.name, exc)
            continue
        if isinstance(command, click.Command):
            cli.add_command(command, ep.name)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every ``ToolkitError`` becomes one line on stderr and its exit code."""
    _load_plugin_commands()
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args or os.environ.get("APPLIANCE_RELEASE_DEBUG") == "1"
    try:
        cli.main(args=args, prog_name="appliance-release", standalone_mode=False)
    except ToolkitError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2 if isinstance(exc, click.UsageError) else exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
