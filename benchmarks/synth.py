"""Time the mini-Slakh generator on a preset and measure what it writes.

Generates the preset's dataset from scratch (``force=True``) into a scratch folder under the cache root (or
``--out``), then prints ONE JSON line:

    {"preset": .., "seed": .., "jobs": .., "seconds": wall time, "tracks": .., "bytes": bytes on disk,
     "track_seconds": total song length, "audio_seconds_written": seconds of audio in all flac files (stems + mixes),
     "realtime_factor": track_seconds / seconds}

Targets (issue): ``smoke`` under 60 s on 2 cores; ``default`` under 600 s and 1 GiB on 2 cores.
The scratch folder is deleted afterwards unless ``--keep`` is given.

Run: ``python benchmarks/synth.py --preset smoke|default [--seed 0] [--jobs N] [--out DIR] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from partsim_core.data.cache import cache_root
from partsim_core.data.synth import dataset_summary, synthesize_dataset


def main(argv: list[str] | None = None) -> int:
    """Generate once, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smoke", help="smoke, default or paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--out", default=None, help="scratch dataset folder (default: <cache>/bench/mini-slakh-PRESET)")
    parser.add_argument("--keep", action="store_true", help="keep the generated dataset")
    parser.add_argument("--progress", action="store_true", help="show the progress bar (on stderr)")
    args = parser.parse_args(argv)

    out = Path(args.out) if args.out else cache_root() / "bench" / f"mini-slakh-{args.preset}"
    start = time.perf_counter()
    synthesize_dataset(out, args.preset, seed=args.seed, jobs=args.jobs, fresh=True, progress=args.progress)
    seconds = time.perf_counter() - start
    summary = dataset_summary(out)
    if not args.keep:
        shutil.rmtree(out)
    print(json.dumps({"preset": args.preset, "seed": args.seed, "jobs": args.jobs or os.cpu_count(),
                      "seconds": round(seconds, 2), **summary,
                      "realtime_factor": round(summary["track_seconds"] / seconds, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
