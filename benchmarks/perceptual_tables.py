"""Wall time of the whole ``partsim perceptual tables`` (or ``run``) command on the published Inst-Sim ABX data.

Runs the command as a user would (a fresh process: imports, CSV parsing, every table, atomic JSON write) and
prints ONE JSON line: ``{"benchmark": "perceptual_tables", "command": .., "seconds": .., "limit_s": 30,
"valid_responses": .., "abx": ..}``. The target is < 30 s on 2 CPU cores (chapter-5 issue).

Run: ``python benchmarks/perceptual_tables.py [--abx ../shared/abx] [--command tables|run]``.
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
    parser.add_argument("--command", default="tables", choices=["tables", "run"], help="which command to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tables.json"
        start = time.perf_counter()
        command = [sys.executable, "-c", "import sys; from partsim_core.cli import main; sys.exit(main())",
                   "perceptual", args.command, "--abx", args.abx, "--out", str(out)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        seconds = time.perf_counter() - start
        written = json.loads(out.read_text())
        valid = written["valid_responses"] if args.command == "tables" else written["data"]["valid_responses"]
    print(json.dumps({"benchmark": "perceptual_tables", "command": args.command, "seconds": round(seconds, 3), "limit_s": 30,
                      "valid_responses": valid, "abx": Path(args.abx).name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
