"""The one-command demo: publish -> promote -> resolve -> install plan on a throwaway registry."""

from __future__ import annotations

import sys

MISSING = (
    "release publishing (issue 6), channel promotion (issue 6), "
    "the consumer resolver and install plan (issue 7)"
)


def main() -> int:
    sys.stderr.write(f"demo: not yet available: {MISSING}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
