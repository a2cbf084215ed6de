"""``python -m consumer``: the appliance-release CLI."""

import sys

from consumer.cli import main

sys.exit(main())
