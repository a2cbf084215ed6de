"""Write schema/release-manifest.v1.json from consumer's release-manifest models.

    .venv/bin/python scripts/generate_schema.py           # (re)write the file
    .venv/bin/python scripts/generate_schema.py --check   # exit 1 if it is out of date

The file is checked in; tests/unit/test_manifest_schema.py fails when it drifts
from the models.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.manifest import release_manifest_schema_text  # noqa: E402

SCHEMA_PATH = ROOT / "schema" / "release-manifest.v1.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; write nothing")
    parser.add_argument("--output", type=Path, default=SCHEMA_PATH, help="where to write")
    args = parser.parse_args(argv)
    text = release_manifest_schema_text()
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != text:
            sys.stderr.write(f"{args.output} is out of date; run scripts/generate_schema.py\n")
            return 1
        return 0
    if current != text:
        args.output.write_text(text, encoding="utf-8")
        sys.stderr.write(f"wrote {args.output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
