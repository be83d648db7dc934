"""Speed of the torch log-mel front end against librosa on the same batch (paper settings).

A batch of 64 three-second segments at 44.1 kHz (window 2048, hop 512, 128 mel bins) goes through
:class:`partsim_core.frontend.LogMel` and through ``librosa.feature.melspectrogram`` + ``librosa.power_to_db``
(one segment at a time, as a per-segment data loader would), in the same process. After a warm-up run of each,
each is timed ``--repeats`` times in a row, for ``--rounds`` alternating rounds; the best of each is kept.
Prints ONE JSON line:

    {"ours_s": .., "librosa_s": .., "speedup": librosa_s / ours_s, "batch": 64, "seconds": 3,
     "torch_threads": .., "device": "cpu", "max_abs_diff_db": ..}

``max_abs_diff_db`` checks that both computed the same thing (dB difference where librosa is above its floor).
The librosa timing always runs on the CPU; ``--device cuda`` times our front end on the GPU (synchronised).

Run: ``python benchmarks/frontend.py [--device cpu|cuda] [--repeats 5] [--rounds 3] [--batch 64] [--seconds 3]
[--torch-threads N]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from partsim_core.frontend import LogMel
from partsim_core.presets import get_preset


def _timed(function, synchronise_cuda: bool = False) -> float:
    """Wall time of one call of ``function``."""
    if synchronise_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if synchronise_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Time both front ends and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device for our front end: cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="consecutive timed runs per front end and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (ours x repeats, librosa x repeats)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--preset", default="paper", help="preset whose front end settings are timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice, one per core)")
    args = parser.parse_args(argv)

    import librosa  # benchmark/test dependency only

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    config = get_preset(args.preset).frontend
    n_samples = int(round(args.seconds * config.sample_rate))
    rng = np.random.default_rng(args.seed)
    batch = (0.1 * rng.standard_normal((args.batch, n_samples))).astype(np.float32)

    device = torch.device(args.device)
    front_end = LogMel(config)
    batch_tensor = torch.from_numpy(batch).to(device)
    on_cuda = device.type == "cuda"

    def run_ours() -> torch.Tensor:
        with torch.inference_mode():
            return front_end(batch_tensor)

    def run_librosa() -> np.ndarray:
        results = []
        for segment in batch:
            power = librosa.feature.melspectrogram(y=segment, sr=config.sample_rate, n_fft=config.n_fft,
                                                   hop_length=config.hop_length, n_mels=config.n_mels,
                                                   pad_mode="reflect")
            results.append(librosa.power_to_db(power, ref=np.max, top_db=config.top_db))
        return np.stack(results)

    ours_output = run_ours()  # warm-up (also builds the cached filterbank)
    reference_db = run_librosa()
    ours_db = ours_output.float().cpu().numpy() * config.top_db - config.top_db
    above_floor = reference_db > -config.top_db + 1.0
    max_abs_diff_db = float(np.abs(ours_db - reference_db)[above_floor].max())

    # Blocks of consecutive runs, alternated over rounds so that both see the same background load on a shared
    # machine; best of each kept. Not run-by-run alternation: numpy's OpenBLAS threads keep spinning for a while
    # after librosa's matrix product and, on 2 cores, would steal the CPU from the very next torch call.
    ours_s = librosa_s = float("inf")
    for _ in range(args.rounds):
        ours_s = min(ours_s, *(_timed(run_ours, synchronise_cuda=on_cuda) for _ in range(args.repeats)))
        librosa_s = min(librosa_s, *(_timed(run_librosa) for _ in range(args.repeats)))
    print(json.dumps({
        "ours_s": round(ours_s, 5),
        "librosa_s": round(librosa_s, 5),
        "speedup": round(librosa_s / ours_s, 2),
        "batch": args.batch,
        "seconds": args.seconds if args.seconds != int(args.seconds) else int(args.seconds),
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "max_abs_diff_db": round(max_abs_diff_db, 6),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
