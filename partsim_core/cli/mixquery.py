"""``partsim mixquery ...``: chapter 6's MixQuery retrieval from the command line.

* ``partsim mixquery index [--catalog ROOT] [--preset P] [--backend csn|separated|mert] [--split test|all]
  [--out DIR] [--device D] [--mert-model DIR]``: embed every 10-s segment and part of a catalog and write the
  index folder (default ``<cache>/mixquery/<backend>-<hash>``); prints the folder and counts as one JSON line.
  A fresh index of the same model and catalog is reused; a stale one is rebuilt.
* ``partsim mixquery query --index DIR --stem SONG:PART:SEGMENT [--stem ...] [--k 10] [--similar]
  [--search auto|exact|ann]``: songs
  ranked by eq. 6.1-6.2 for the query set (one JSON line per song), or with ``--similar`` the stems most similar
  to one stem query (one JSON line per stem).
* ``partsim mixquery serve --index DIR``: the MixQuery web app (added by :mod:`partsim_core.mixquery.app`).
* ``partsim mixquery evaluate [--preset P] [--backends csn,separated] [--out FILE]``: the ground-truth evaluation on
  a catalog of pseudo pieces (recall@10, recall@100, MRR per backend and part combination, beside the track-level
  network and random ranking) and the simulated C0-C3 listening test
  (:mod:`partsim_core.mixquery.evaluation`); prints the tables and writes JSON atomically with ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from partsim_core import INSTRUMENTS
from partsim_core.presets import PRESETS

#: ``--backend`` values (``partsim_core.mixquery.BACKENDS``; listed here so that ``--help`` imports little).
BACKEND_NAMES = ("csn", "separated", "mert", "track")

#: Part-level backends ``mixquery evaluate`` accepts (``track`` is its track-level peer, added unless
#: ``--no-track-level``; ``mert`` would need a local model folder and is left to the Python API).
EVALUATE_BACKENDS = ("csn", "separated")

#: ``--split`` values (``partsim_core.mixquery.catalog.CATALOG_SPLITS``).
SPLIT_NAMES = ("test", "validation", "train", "omitted", "all")


def index_catalog(args: argparse.Namespace, backend: Any = None) -> dict[str, Any]:
    """Build (or reuse) the index ``args`` describe and return its summary; the whole of ``mixquery index``
    except the printing.

    ``backend`` replaces the one ``args.backend`` names (tests inject a tiny model); then ``--preset``, ``--device``,
    ``--data-root`` and ``--mert-model`` are not used for the model. The catalog is opened (and checked) before any
    model is trained, so a bad ``--catalog`` fails at once.

    Raises:
        PartsimError: unknown preset, a bad catalog or split, a backend that cannot be built (``mert`` without
            transformers or a model folder), an embedding failure.
    """
    from partsim_core.presets import get_preset
    from partsim_core.mixquery.backends import check_mert, get_backend
    from partsim_core.mixquery.catalog import Catalog, default_catalog_root
    from partsim_core.mixquery.index import build_index

    settings = get_preset(args.preset)
    progress = not args.no_progress
    if backend is None and args.backend == "mert":
        check_mert(args.mert_model)
    root = args.catalog if args.catalog is not None else default_catalog_root(args.preset, progress=progress)
    rate = backend.sample_rate if backend is not None else settings.frontend.sample_rate
    catalog = Catalog(root, split=args.split, sample_rate=rate)
    if backend is None:
        backend = get_backend(args.backend, args.preset, data_root=args.data_root or "", device=args.device,
                              progress=progress, seed=args.seed, mert_model=args.mert_model)
    index = build_index(catalog, backend, args.out, rebuild=args.rebuild, progress=progress)
    return index.describe()


def run_index(args: argparse.Namespace) -> int:
    """``partsim mixquery index``: print the index summary as one JSON line."""
    print(json.dumps(index_catalog(args), default=str))
    return 0


def parse_stem(text: str) -> Any:
    """``SONG:PART:SEGMENT`` -> :class:`~partsim_core.mixquery.StemQuery` (the song id may contain ``:``).

    Raises:
        PartsimError: not three fields, or a segment that is not an integer.
    """
    from partsim_core.errors import PartsimError
    from partsim_core.mixquery.search import StemQuery

    fields = str(text).rsplit(":", 2)
    if len(fields) != 3 or not fields[0] or not fields[1]:
        raise PartsimError(f"--stem {text!r}: expected SONG:PART:SEGMENT, e.g. Track01877:drums:2")
    try:
        segment = int(fields[2])
    except ValueError:
        raise PartsimError(f"--stem {text!r}: segment {fields[2]!r} is not an integer") from None
    return StemQuery(fields[0], fields[1], segment)


def query_lines(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The results ``mixquery query`` prints, one dict per line (best first)."""
    from partsim_core.errors import PartsimError
    from partsim_core.mixquery.index import MixQueryIndex

    queries = [parse_stem(text) for text in args.stem]
    index = MixQueryIndex.load(args.index, search=getattr(args, "search", "auto"))
    lines = []
    if args.similar:
        if len(queries) != 1:
            raise PartsimError(f"--similar takes exactly one --stem (got {len(queries)})")
        for rank, hit in enumerate(index.similar_stems(queries[0], k=args.k), start=1):
            _, start, end = index.segments(hit.song)[hit.segment]
            lines.append({"rank": rank, "song": hit.song, "part": queries[0].part, "segment": hit.segment,
                          "start_s": round(start, 3), "end_s": round(end, 3), "distance": hit.distance})
        return lines
    for rank, hit in enumerate(index.search_songs(queries, k=args.k,
                                                  exclude_query_songs=args.exclude_query_songs), start=1):
        _, start, end = index.segments(hit.song)[hit.best_segment]
        lines.append({"rank": rank, "song": hit.song, "distance": hit.distance, "best_segment": hit.best_segment,
                      "start_s": round(start, 3), "end_s": round(end, 3)})
    return lines


def run_query(args: argparse.Namespace) -> int:
    """``partsim mixquery query``: print one JSON line per result."""
    for line in query_lines(args):
        print(json.dumps(line))
    return 0


def parse_backends(text: str) -> list[str]:
    """``--backends csn,separated`` -> ``["csn", "separated"]`` (order kept, duplicates dropped).

    Raises:
        PartsimError: an empty list or an unknown name.

    Used by: ``partsim mixquery evaluate`` (chapter 6).
    """
    from partsim_core.errors import PartsimError

    names = list(dict.fromkeys(name.strip() for name in str(text).split(",") if name.strip()))
    if not names:
        raise PartsimError("--backends is empty; name one or more of: " + ", ".join(EVALUATE_BACKENDS))
    unknown = [name for name in names if name not in EVALUATE_BACKENDS]
    if unknown:
        raise PartsimError(f"--backends: unknown backend(s) {', '.join(unknown)}; choose from "
                           f"{', '.join(EVALUATE_BACKENDS)} (the track-level peer is always added; --no-track-level "
                           "leaves it out)")
    return names


def evaluation_text(result: Any) -> str:
    """The tables ``mixquery evaluate`` prints: catalog summary, metrics per backend and combination, and the
    SIMULATED C0-C3 accuracies.

    Used by: ``partsim mixquery evaluate`` (chapter 6).
    """
    import pandas as pd

    catalog = result.catalog.summary()
    lines = [f"pseudo-piece catalog {catalog['root']}: {catalog['songs']} test songs + {catalog['pieces']} pieces "
             f"({', '.join(f'{kind} {count}' for kind, count in catalog['pieces_per_kind'].items())}), "
             f"{catalog['queries']} queries",
             "",
             "Retrieval against ground truth (mean over queries; random = exact expectation):"]
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.float_format", "{:.3f}".format):
        lines.append(result.table.to_string())
        lines += ["", f"SIMULATED C0-C3 listening test ({result.abx.listeners} simulated listeners following the "
                      "generator's ground truth; not people). Comparison ranks: "
                      + ", ".join(f"{strategy} {low}-{high}" for strategy, (low, high) in result.abx.ranges.items())
                      + f" of {result.abx.n_ranked}",
                  result.abx.accuracy().drop(columns="label").to_string()]
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    """``partsim mixquery evaluate``: print the tables and a one-line summary; write JSON with ``--out``.

    Used by: the ``partsim`` command (chapter 6).
    """
    from partsim_core.data.cache import atomic_write_json
    from partsim_core.mixquery.evaluation import run_evaluation

    backends = parse_backends(args.backends)
    result = run_evaluation(args.preset, data_root=args.data_root or "", backends=backends,
                            track_level=not args.no_track_level, seed=args.seed, device=args.device,
                            progress=not args.no_progress)
    print(evaluation_text(result))
    overall = result.table.xs("all", level="combination")
    summary = {"preset": args.preset, "queries": len(result.catalog.queries),
               "catalog_songs": len(result.catalog.catalog_ids),
               "mrr": {method: round(float(value), 4) for method, value in overall["MRR"].items()},
               "out": str(args.out) if args.out else None}
    if args.out:
        atomic_write_json(args.out, result.to_json())
    print(json.dumps(summary))
    return 0


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mixquery`` group and its ``index``, ``query``, ``evaluate`` and ``serve`` commands."""
    from partsim_core.cli.train import non_negative_int

    parser = subparsers.add_parser(
        "mixquery",
        help="chapter 6: MixQuery, retrieval of songs from stems of different songs (index, query)",
        description=(
            "Chapter 6: MixQuery. Songs of a catalog are cut into 10-s segments and every segment is embedded per "
            "instrumental part; a query set of stems (song, part, segment) retrieves songs by the mean cosine "
            "distance over the query's parts, minimum over each song's segments (thesis eq. 6.1-6.2), and one "
            "stem query finds the most similar stems of other songs."
        ),
    )
    parser.set_defaults(group_parser=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    index = commands.add_parser(
        "index",
        help="embed a catalog's 10-s segments per part and write the index folder",
        description=(
            "Build the MixQuery index of a catalog (a split of a Slakh-format folder): every 10-s segment from the "
            "start of each song (a shorter last segment when at least the backend's minimum length; songs shorter "
            "than that are skipped with a warning) is embedded per part by the backend, L2-normalised, and written "
            "atomically with the format version, the model hash and a fingerprint of the catalog's audio. The "
            "backend's model is trained first when it is not cached. A fresh index of the same model and catalog is "
            "reused; a stale one (catalog changed, model retrained) is rebuilt. Prints one JSON line: the folder, "
            "songs, segments, parts and skipped songs."
        ),
        epilog="Example: partsim mixquery index --preset smoke",
    )
    index.add_argument(
        "--catalog", type=Path, default=None, metavar="ROOT",
        help="Slakh-format folder of the songs to search; default: the preset's embedded dataset",
    )
    index.add_argument(
        "--split", choices=SPLIT_NAMES, default="test",
        help="which tracks of the catalog folder are songs: one split, or all; default: %(default)s",
    )
    index.add_argument(
        "--preset", choices=sorted(PRESETS), default="default",
        help="sizes, sample rate and front end of the backend's model (partsim_core/presets.py); default: "
             "%(default)s",
    )
    index.add_argument(
        "--backend", choices=BACKEND_NAMES, default="csn",
        help="embeddings: csn = the chapter-4 CSN subspaces straight from the mix (condition (i) of Table 4.2); "
             "separated = our U-Net's stems + the chapter-3 per-part networks; mert = a local MERT model on the "
             "separated stems (needs transformers and --mert-model); track = chapter 3's track-level network on "
             "the mix (one part, 'mix': not part-level, the evaluation's peer); default: %(default)s",
    )
    index.add_argument(
        "--out", type=Path, default=None, metavar="DIR",
        help="index folder; default: <cache>/mixquery/<backend>-<hash of model, catalog and split>",
    )
    index.add_argument(
        "--data-root", type=Path, default=None, metavar="DIR",
        help="dataset the backend's models are trained on; default: the preset's embedded dataset",
    )
    index.add_argument(
        "--device", default="auto",
        help="torch device for training and embedding: auto (CUDA when visible, else CPU), cpu, cuda or cuda:N; "
             "default: %(default)s",
    )
    index.add_argument(
        "--mert-model", type=Path, default=None, metavar="DIR",
        help="local MERT model folder (config.json, weights, preprocessor_config.json) for --backend mert; never "
             "downloaded",
    )
    index.add_argument("--seed", type=non_negative_int, default=0,
                       help="seed of the backend's training runs; default: %(default)s")
    index.add_argument("--rebuild", action="store_true", help="build even when a fresh index is already there")
    index.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    index.set_defaults(func=run_index)

    query = commands.add_parser(
        "query",
        help="retrieve songs for a query set of stems, or similar stems of one stem",
        description=(
            "Query a MixQuery index. Without --similar: songs ranked by the mean over the query's parts of the "
            "cosine distance to the averaged stem queries of each part (thesis eq. 6.1-6.2), minimum over each "
            "song's segments; each line gives the song, its distance and the segment where it matched best. With "
            f"--similar: the stems of the same part in other songs nearest to the one --stem. Parts: "
            f"{', '.join(INSTRUMENTS)}. Prints one JSON line per result, best first."
        ),
        epilog="Example: partsim mixquery query --index DIR --stem Track01877:drums:2 --stem Track01890:bass:0",
    )
    query.add_argument("--index", type=Path, required=True, metavar="DIR", help="an index folder ('mixquery index')")
    query.add_argument(
        "--stem", action="append", required=True, metavar="SONG:PART:SEGMENT",
        help="a stem query: song id, part and segment number (0 = the first 10 s); repeat for a query set",
    )
    query.add_argument("--k", type=positive_int, default=10, help="results; default: %(default)s (the app: 100)")
    query.add_argument("--similar", action="store_true",
                       help="similar stems of the one --stem instead of songs")
    query.add_argument(
        "--exclude-query-songs", action="store_true",
        help="leave the songs of the query set out of the song results (the thesis's app shows them)",
    )
    query.add_argument(
        "--search", choices=("auto", "exact", "ann"), default="auto",
        help="exact search, approximate (FAISS-trained IVF read part by part) or auto: approximate for indexes of "
             "300,000 segments or more; default: %(default)s",
    )
    query.set_defaults(func=run_query)

    evaluate = commands.add_parser(
        "evaluate",
        help="ground-truth evaluation on pseudo pieces (recall@10/@100, MRR) and a simulated C0-C3 test",
        description=(
            "Evaluate MixQuery with ground truth (beyond the thesis, which had none): a catalog of the test songs "
            "of the embedded dataset plus pseudo pieces mixed from their parts (for each query 'part p of song A + "
            "part q of song B': pieces with exactly those two parts, distractors sharing one of them, random "
            "pieces) is indexed with each backend; recall@10, recall@100 and MRR of the pieces containing both "
            "query parts are reported per backend and part combination, beside the track-level network (chapter "
            "3's mix network) and random ranking (exact expectation). Then the thesis's C0-C3 ABX protocol (6.4.1) "
            "is run with SIMULATED listeners that follow the generator's ground truth. Needs the embedded "
            "generator's dataset (real Slakh2100 has no ground truth); missing models are trained first. Prints "
            "the tables and a one-line JSON summary."
        ),
        epilog="Example: partsim mixquery evaluate --preset smoke --backends csn,separated --out eval.json",
    )
    evaluate.add_argument(
        "--preset", choices=sorted(PRESETS), default="default",
        help="models and evaluation sizes (partsim_core/presets.py, retrieval/evaluation.py); default: %(default)s",
    )
    evaluate.add_argument(
        "--data-root", type=Path, default=None, metavar="DIR",
        help="a dataset written by 'partsim data synth' (needs its partsim_ground_truth.json); default: the "
             "preset's embedded dataset",
    )
    evaluate.add_argument(
        "--backends", default="csn,separated", metavar="LIST",
        help=f"comma-separated part-level backends to evaluate, of {', '.join(EVALUATE_BACKENDS)}; default: "
             "%(default)s",
    )
    evaluate.add_argument("--no-track-level", action="store_true",
                          help="leave out the track-level peer (chapter 3's mix network)")
    evaluate.add_argument("--seed", type=non_negative_int, default=0,
                          help="seed of the catalog, the training of missing models, random ranking and the "
                               "simulated listeners; default: %(default)s")
    evaluate.add_argument(
        "--device", default="auto",
        help="torch device for training and embedding: auto, cpu, cuda or cuda:N; default: %(default)s",
    )
    evaluate.add_argument("--out", type=Path, default=None, metavar="FILE",
                          help="write every table (and the ground truth) as JSON here, atomically")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    evaluate.set_defaults(func=run_evaluate)

    # ``partsim mixquery serve``: the web app of thesis Fig. 6.2 (partsim_core/mixquery/app.py).
    from partsim_core.mixquery.app import add_serve_parser

    add_serve_parser(commands)
