"""``python -m control_plane``: run the control plane's HTTP service (the image's entrypoint).

Configured by the environment (see ``control_plane.service.ServiceSettings``); takes no
arguments. Exit codes: 0 after SIGTERM/SIGINT, 1 when it cannot listen, 2 for an invalid
setting.
"""

from __future__ import annotations

import os
import sys

from control_plane.service import ServiceSettings, SettingsError, configure_logging, log, serve
from control_plane.updates import Updater, UpdateSettings
from ocicore.errors import ToolkitError


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = sys.argv[1:] if argv is None else argv
    if args:
        log.error("unexpected arguments", extra={"fields": {
            "arguments": args, "hint": "configure with CONTROL_PLANE_* environment variables"}})
        return 2
    try:
        settings = ServiceSettings.from_environ()
        update_settings = UpdateSettings.from_environ(os.environ)
        updater = None if update_settings is None else Updater(update_settings,
                                                               settings.state_file)
    except SettingsError as exc:
        log.error("invalid setting", extra={"fields": {"error": exc.message, "hint": exc.hint}})
        return 2
    except (ToolkitError, OSError) as exc:
        log.error("invalid update settings", extra={"fields": {"error": str(exc)}})
        return 2
    return serve(settings, updater)


if __name__ == "__main__":
    sys.exit(main())
