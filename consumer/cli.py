"""The ``appliance-release`` command line.

The appliance-side commands are defined here so that they work with only
``consumer`` and ``ocicore`` installed. Publisher commands are added at run time
from the ``appliance_release.commands`` entry-point group when the publisher is
installed, so no layer imports a layer above it.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import click

from ocicore.errors import ToolkitError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Log every request and show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Ship an on-prem Kubernetes appliance through an OCI registry."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _load_plugin_commands() -> None:
    for ep in entry_points(group="appliance_release.commands"):
        command = ep.load()
        if isinstance(command, click.Command):
            cli.add_command(command, ep.name)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn every ``ToolkitError`` into one line on stderr and its exit code."""
    _load_plugin_commands()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, standalone_mode=False)
    except ToolkitError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
