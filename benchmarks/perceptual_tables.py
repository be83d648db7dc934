"""Wall time of the whole ``partsim perceptual tables`` command on the published Inst-Sim ABX data.

Runs the command as a user would (a fresh process: imports, CSV parsing, every table, atomic JSON write) and
prints ONE JSON line: ``{"benchmark": "perceptual_tables", "seconds": .., "limit_s": 30, "valid_responses": ..,
"abx": ..}``. The target is < 30 s on 2 CPU cores (chapter-5 issue).

Run: ``python benchmarks/perceptual_tables.py [--abx ../shared/abx]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_ABX = Path(__file__).resolve().parents[1].parent / "shared" / "abx"


def main() -> int:
    """Time one run of the command and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--abx", default=str(DEFAULT_ABX), help="ABX dataset folder (default ../shared/abx)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tables.json"
        start = time.perf_counter()
        command = [sys.executable, "-c", "import sys; from partsim_core.cli import main; sys.exit(main())",
                   "perceptual", "tables", "--abx", args.abx, "--out", str(out)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        seconds = time.perf_counter() - start
        valid = json.loads(out.read_text())["valid_responses"]
    print(json.dumps({"benchmark": "perceptual_tables", "seconds": round(seconds, 3), "limit_s": 30,
                      "valid_responses": valid, "abx": Path(args.abx).name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
