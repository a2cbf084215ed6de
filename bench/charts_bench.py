"""Pack this repository's charts with our deterministic packer and with `helm package`,
in the same run; print both times, the ratio, and whether each is reproducible when the
files' mtimes change between rounds (as they do in every fresh checkout). The chart files'
mtimes are set to the current time between rounds.

    .venv/bin/python bench/charts_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.tools import find_tool  # noqa: E402
from publisher.charts import pack_chart  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    helm = find_tool("helm")
    charts = sorted(p for p in (ROOT / "charts").iterdir() if (p / "Chart.yaml").is_file())
    ours, theirs = [], []
    our_digests: set[str] = set()
    helm_digests: set[str] = set()
    for _ in range(args.rounds):
        started = time.perf_counter()
        packed = [pack_chart(chart, epoch=0) for chart in charts]
        ours.append(time.perf_counter() - started)
        our_digests.add(hashlib.sha256(b"".join(p.content for p in packed)).hexdigest())
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            subprocess.run([helm, "package", *map(str, charts), "-d", out], check=True,
                           capture_output=True)
            theirs.append(time.perf_counter() - started)
            blobs = b"".join(p.read_bytes() for p in sorted(Path(out).glob("*.tgz")))
            helm_digests.add(hashlib.sha256(blobs).hexdigest())
        # a fresh checkout gives the files new mtimes; helm 4 packs the mtimes, we do not
        time.sleep(1.1)
        for path in (p for chart in charts for p in [chart, *chart.rglob("*")]):
            os.utime(path)
    ours_s, helm_s = statistics.median(ours), statistics.median(theirs)
    print(f"{'operation':<40} {'ours (s)':>9} {'helm (s)':>9} {'ratio':>7}")
    print(f"{'package ' + str(len(charts)) + ' charts (median of ' + str(args.rounds) + ')':<40}"
          f" {ours_s:9.3f} {helm_s:9.3f} {helm_s / ours_s:7.2f}")
    print(f"distinct outputs over {args.rounds} rounds: ours {len(our_digests)}, "
          f"helm package {len(helm_digests)}")
    print("ratio = helm time / our time (above 1: ours is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
