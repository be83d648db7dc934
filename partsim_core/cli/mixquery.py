"""``partsim mixquery ...``: chapter 6's MixQuery retrieval from the command line.

* ``partsim mixquery index [--catalog ROOT] [--preset P] [--backend csn|separated|mert|track] [--split S]
  [--out-dir DIR] [--fresh] [--device D] [--mert-model DIR] [--mert-heads DIR]``: embed every 10-s segment and part
  of a catalog and write the index folder (default ``<cache>/mixquery/<backend>-<hash>``) through the output rule
  (:mod:`partsim_core.data.outputs`); prints the folder and counts as one JSON line. An index there that opens and
  verifies for the same model and catalog is reused; one that fails is rebuilt; ``--fresh`` always rebuilds.
* ``partsim mixquery query --index DIR --stem SONG:PART:SEGMENT [--stem ...] [--k 10] [--similar]
  [--search auto|exact|ann]``: songs
  ranked by eq. 6.1-6.2 for the query set (one JSON line per song), or with ``--similar`` the stems most similar
  to one stem query (one JSON line per stem).
* ``partsim mixquery serve --index DIR``: the MixQuery web app (added by :mod:`partsim_core.mixquery.app`).
* ``partsim mixquery run [--preset P] [--seeds N] [--backends csn,separated] [--out FILE.json]``: chapter 6's
  evaluation (:mod:`partsim_core.mixquery.run`): ground-truth recall@10, recall@100 and MRR on pseudo pieces with
  95 % intervals, the CSN's search distance chosen on validation pieces, the simulated C0-C3 test, findings.
* ``partsim train mixquery-head --mert-model DIR --out-dir DIR [--seeds N]``: the thesis's per-stem head on frozen
  MERT features, one set of heads per seed (registered into the ``train`` group by :func:`register_train_command`).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from partsim_core import INSTRUMENTS
from partsim_core.baseline.separated_stems import separated_source
from partsim_core.cli.options import (
    add_command_group,
    add_data_root,
    add_device,
    add_fresh,
    add_no_progress,
    add_out_dir,
    add_preset,
    add_run_options,
    add_seed,
    add_seeds,
    positive_int,
)
from partsim_core.data.dataset import load_dataset
from partsim_core.data.outputs import (
    MARKER,
    check_not_inside_inputs,
    check_output_dir,
    check_output_file,
    output_directory,
    write_json_output,
)
from partsim_core.errors import PartsimError
from partsim_core.mixquery import run as chapter
from partsim_core.mixquery.app import add_serve_parser
from partsim_core.mixquery.backends import get_backend
from partsim_core.mixquery.catalog import Catalog, default_catalog_root
from partsim_core.mixquery.index import MixQueryIndex
from partsim_core.mixquery.index_build import build_index, default_index_dir
from partsim_core.mixquery.manifest import record_csn_distance, resolve_distance
from partsim_core.mixquery.mert import (
    HEAD_LEARNING_RATE,
    check_mert,
    load_mert,
    save_heads,
    split_features,
    train_mert_head,
)
from partsim_core.mixquery.search import StemQuery
from partsim_core.presets import get_preset

#: ``--backend`` values (``partsim_core.mixquery.BACKENDS``; listed here so that ``--help`` imports little).
BACKEND_NAMES = ("csn", "separated", "mert", "track")

#: Part-level backends ``mixquery run`` accepts (``track`` is its track-level peer, added unless
#: ``--no-track-level``; ``mert`` would need a local model folder and is left to the Python API).
EVALUATE_BACKENDS = ("csn", "separated")

#: ``--split`` values (``partsim_core.mixquery.catalog.CATALOG_SPLITS``).
SPLIT_NAMES = ("test", "validation", "train", "omitted", "all")


def index_catalog(args: argparse.Namespace, backend: Any = None) -> dict[str, Any]:
    """Build (or reuse) the index ``args`` describe and return its summary; the whole of ``mixquery index``
    except the printing.

    ``backend`` replaces the one ``args.backend`` names (tests inject a tiny model); then ``--preset``, ``--device``,
    ``--data-root`` and ``--mert-model`` are not used for the model. The catalog is opened (and checked) before any
    model is trained, so a bad ``--catalog`` fails at once. An index already at the output folder is opened and
    verified (:meth:`MixQueryIndex.load` with the backend's model hash and the catalog); it is reused when that
    succeeds and rebuilt when it raises (only a folder partsim wrote is replaced; ``--fresh`` always rebuilds).

    Raises:
        PartsimError: unknown preset, a bad catalog or split, an output inside the catalog, a backend that cannot
            be built (``mert`` without transformers or a model folder), an embedding failure.
    """

    settings = get_preset(args.preset)
    progress = not args.no_progress
    if args.out_dir is not None:
        # Before any work: a file, a path under a file or a folder partsim did not write is refused at once (an
        # index partsim wrote there is opened and verified below, and reused or rebuilt).
        check_output_dir(args.out_dir, inputs=[args.catalog], fresh=True)
    if backend is None and args.backend == "mert":
        check_mert(args.mert_model)
    rate = backend.sample_rate if backend is not None else settings.frontend.sample_rate
    data = None
    if args.catalog is None:
        data = load_dataset(args.preset, args.data_root or "", progress=progress)
    catalog = Catalog(args.catalog if args.catalog is not None else default_catalog_root(data), split=args.split,
                      sample_rate=rate)
    if args.out_dir is not None:
        check_not_inside_inputs(args.out_dir, [catalog.root])
    if backend is None:
        data = data or load_dataset(args.preset, args.data_root or "", progress=progress)
        backend = get_backend(args.backend, data, device=args.device, progress=progress, seed=args.seed,
                              mert_model=args.mert_model, mert_heads=args.mert_heads)
    distance, why = resolve_distance(getattr(args, "distance", "auto"), backend.name,
                                     backend.preset or args.preset)
    folder = Path(args.out_dir) if args.out_dir is not None else default_index_dir(
        backend.name, backend.model_hash, catalog.root, catalog.split)
    stale = False
    if folder.is_dir() and any(folder.iterdir()) and not args.fresh:
        try:
            index = MixQueryIndex.load(folder, backend=backend.name, model_hash=backend.model_hash, catalog=catalog)
        except PartsimError:
            stale = True  # fails to open or verify: rebuilt below (when partsim wrote it)
        else:
            if index.distance == distance:
                index.reused = True
                return {**index.describe(), "distance_source": why}
            stale = True  # built for the other distance: rebuilt below
    # A stale folder is replaced only when it carries partsim's output marker (output_directory checks it).
    replace = args.fresh or (stale and (folder / MARKER).is_file())
    with output_directory(folder, inputs=[catalog.root], fresh=replace) as tmp:
        build_index(catalog, backend, tmp / "index", rebuild=True, progress=progress, distance=distance)
        for item in (tmp / "index").iterdir():
            item.replace(tmp / item.name)
        (tmp / "index").rmdir()
    index = MixQueryIndex.load(folder, backend=backend.name, model_hash=backend.model_hash, catalog=catalog)
    return {**index.describe(), "distance_source": why}


def run_index(args: argparse.Namespace) -> int:
    """``partsim mixquery index``: print the index summary as one JSON line."""
    print(json.dumps(index_catalog(args), default=str))
    return 0


def parse_stem(text: str) -> Any:
    """``SONG:PART:SEGMENT`` -> :class:`~partsim_core.mixquery.StemQuery` (the song id may contain ``:``).

    Raises:
        PartsimError: not three fields, or a segment that is not an integer.
    """

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
    """

    names = list(dict.fromkeys(name.strip() for name in str(text).split(",") if name.strip()))
    if not names:
        raise PartsimError("--backends is empty; name one or more of: " + ", ".join(EVALUATE_BACKENDS))
    unknown = [name for name in names if name not in EVALUATE_BACKENDS]
    if unknown:
        raise PartsimError(f"--backends: unknown backend(s) {', '.join(unknown)}; choose from "
                           f"{', '.join(EVALUATE_BACKENDS)} (the track-level peer is always added; --no-track-level "
                           "leaves it out)")
    return names


def _cell(cell: dict[str, float]) -> str:
    return f"{cell['value']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"


def evaluation_text(result: Any) -> str:
    """The tables ``mixquery run`` prints: catalog summary, the CSN's distance choice, metrics per method with
    95 % intervals, the SIMULATED C0-C3 accuracies and the findings."""
    catalog = result.catalog.summary()
    kinds = ", ".join(f"{kind} {count}" for kind, count in catalog["pieces_per_kind"].items())
    lines = [(f"pseudo-piece catalog {catalog['location']}: {catalog['songs']} test songs + {catalog['pieces']} "
              f"pieces ({kinds}), {catalog['queries']} queries; seeds {', '.join(map(str, result.seeds))}")]
    if result.selection is not None:
        chosen = result.selection
        lines.append(f"CSN distance: {chosen.chosen} (MRR on {chosen.split} pieces: "
                     + ", ".join(f"{name} {_cell(cells['MRR'])}" for name, cells in chosen.cells.items())
                     + f"; euclidean - cosine {_cell(chosen.difference)})")
    lines += ["", "Retrieval against ground truth, all queries (mean [95 % interval]; random = exact expectation):"]
    for method, combinations in result.cells.items():
        cells = combinations["all"]
        lines.append(f"  {method:<10} " + "  ".join(f"{name} {_cell(cell)}" for name, cell in cells.items()))
    lines += ["", f"SIMULATED C0-C3 listening test ({result.abx.listeners} simulated listeners following the "
                  "generator's ground truth; not people). Comparison ranks: "
              + ", ".join(f"{strategy} {low}-{high}" for strategy, (low, high) in result.abx.ranges.items())
              + f" of {result.abx.n_ranked}"]
    for method, strategies in result.abx.cells().items():
        lines.append(f"  {method:<10} "
                     + "  ".join(f"{strategy} {_cell(cell)}" for strategy, cell in strategies.items()))
    lines += ["", "Findings:"] + [f"  [{item['verdict']}] {item['claim']}" for item in result.findings]
    return "\n".join(lines)


def run_run(args: argparse.Namespace) -> int:
    """``partsim mixquery run``: print the tables and a one-line summary; write the chapter JSON with ``--out``."""

    backends = parse_backends(args.backends)
    if args.out is not None:
        check_output_file(args.out, fresh=args.fresh)
    progress = not args.no_progress
    data = load_dataset(args.preset, args.data_root or "", progress=progress)
    if args.out is not None:
        check_output_file(args.out, inputs=[data.root], fresh=args.fresh)
    result = chapter.run_evaluation(data, backends=backends, track_level=not args.no_track_level, seed=args.seed,
                                    seeds=args.seeds, device=args.device, epochs=args.epochs, fresh=args.fresh,
                                    progress=progress)
    print(evaluation_text(result))
    if result.selection is not None:
        # What 'mixquery index --distance auto' then uses for this preset's CSN.
        record_csn_distance(args.preset, result.selection.chosen, result.selection.to_json())
    summary = {"preset": args.preset, "seeds": result.seeds, "queries": len(result.catalog.queries),
               "mrr": {method: round(cells["all"]["MRR"]["value"], 4) for method, cells in result.cells.items()},
               "out": str(args.out) if args.out else None}
    if args.out is not None:
        write_json_output(args.out, result.to_json(), inputs=[data.root], fresh=args.fresh,
                          command="partsim mixquery run")
    print(json.dumps(summary))
    return 0


#: Epochs of the head (thesis 6.3.3: 100); ``--epochs`` overrides.
HEAD_EPOCHS_DEFAULT = 100


def head_folders(out_dir: Path, seed: int, seeds: int) -> dict[int, Path]:
    """Seed -> the folder of its heads: ``out_dir`` for one seed, ``out_dir/seed-N`` for each of several."""
    return {number: Path(out_dir) / f"seed-{number}" if seeds > 1 else Path(out_dir)
            for number in range(seed, seed + seeds)}


def train_head(args: argparse.Namespace, features_model: Any = None) -> list[dict[str, Any]]:
    """The whole of ``train mixquery-head`` except the printing (tests pass a tiny stand-in ``features_model``):
    one summary per seed ``--seed .. --seed + --seeds - 1``.

    The MERT features are computed once; one set of heads is trained per seed, and the folders are written only
    after every seed has trained.

    Raises:
        PartsimError: no MERT (transformers or model folder) and no stand-in, an output folder partsim may not
            replace or inside the dataset, too few songs for same-song triplets.
    """

    progress = not args.no_progress
    folders = head_folders(args.out_dir, args.seed, args.seeds)
    for folder in folders.values():
        check_output_dir(folder, fresh=args.fresh)
    model = features_model if features_model is not None else load_mert(args.mert_model, args.device)
    data = load_dataset(args.preset, args.data_root or "", progress=progress)
    for folder in folders.values():
        check_output_dir(folder, inputs=[data.root], fresh=args.fresh)
    tracks = data.dataset.tracks(args.split)
    if args.input == "ideal":
        source = data.cache
    else:
        source = separated_source(data, "unet", device=args.device, progress=progress,
                                  seed=args.seed)
    features = split_features(model, source, tracks, INSTRUMENTS, data.fingerprint(tracks), args.input,
                              progress=progress)
    epochs = args.epochs or HEAD_EPOCHS_DEFAULT
    trainable = {part: (values, songs) for part, (values, songs) in features.items()
                 if len(Counter(songs)) >= 2 and max(Counter(songs).values()) >= 2}  # a positive and a negative
    if not trainable:
        raise PartsimError(f"no part of the {args.split} songs has non-silent segments in two songs and two segments "
                           "in one song (positives come from another time of the same song); nothing to train")
    segments = {part: len(songs) for part, (_, songs) in trainable.items()}
    runs = {}
    for seed in folders:
        heads, losses = {}, {}
        for part, (values, songs) in trainable.items():
            trained = train_mert_head(values, songs, epochs=epochs, seed=seed, device=args.device,
                                      progress=progress)
            heads[part], losses[part] = trained.head, trained.losses
        runs[seed] = (heads, losses)
    summaries = []
    for seed, (heads, losses) in runs.items():
        with output_directory(folders[seed], inputs=[data.root], fresh=args.fresh) as tmp:
            save_heads(tmp, heads, {"preset": args.preset, "split": args.split, "input": args.input,
                                    "epochs": epochs, "learning_rate": HEAD_LEARNING_RATE, "seed": seed,
                                    "model": getattr(model, "identity", ""), "losses": losses,
                                    "segments": segments})
        summaries.append({"out_dir": str(folders[seed]), "seed": seed, "parts": list(heads), "segments": segments,
                          "final_loss": {part: round(values[-1], 6) for part, values in losses.items()}})
    return summaries


def run_train_head(args: argparse.Namespace) -> int:
    """``partsim train mixquery-head``: print one JSON line per seed (folder, segments and final loss per part)."""
    for summary in train_head(args):
        print(json.dumps(summary), flush=True)
    return 0


def register_train_command(commands: argparse._SubParsersAction) -> None:
    """Add ``mixquery-head`` to the ``partsim train`` group (called from :mod:`partsim_core.cli.train`)."""
    head = commands.add_parser(
        "mixquery-head",
        help="chapter 6: the thesis's per-stem head on frozen MERT features (same-song triplets, no labels)",
        description=(
            "Train the thesis's MixQuery embedding head (6.3.3): every non-silent 10-s segment of every stem of a "
            "split is passed through a local, frozen MERT model (features averaged over time per layer, cached), "
            "and one 1-D convolution with kernel size 1 per stem type is trained on triplets - a positive from "
            "another time of the same song, a negative from another song - with the cosine distance, Adam at "
            "5e-4, 100 epochs. No labels are needed. Writes heads.pt and heads.json to --out-dir (with --seeds N > 1: "
            "one seed-S subfolder per seed, the features computed once); use them with "
            "'partsim mixquery index --backend mert --mert-heads DIR'. Nothing is downloaded."
        ),
        epilog="Example: partsim train mixquery-head --mert-model ~/models/MERT-v1-95M --out-dir heads",
    )
    add_preset(head)
    add_data_root(head)
    add_device(head)
    add_seed(head)
    head.add_argument("--epochs", type=positive_int, default=None,
                      help=f"training epochs (default: {HEAD_EPOCHS_DEFAULT}, the thesis's)")
    head.add_argument("--mert-model", type=Path, default=None, metavar="DIR",
                      help="local MERT model folder (config.json, weights, preprocessor_config.json); never "
                           "downloaded")
    head.add_argument("--split", choices=("train", "validation", "test"), default="train",
                      help="songs the head is trained on (self-supervised); default: %(default)s")
    head.add_argument("--input", choices=("separated", "ideal"), default="separated",
                      help="stems: separated by our U-Net (as the thesis separated with HT Demucs) or the ideal "
                           "stems; default: %(default)s")
    add_seeds(head)
    add_out_dir(head, "the trained heads (one seed-N subfolder per seed with --seeds > 1)", required=True)
    add_fresh(head, "an earlier head folder partsim wrote")
    add_no_progress(head)
    head.set_defaults(func=run_train_head)


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mixquery`` group and its ``index``, ``query``, ``evaluate`` and ``serve`` commands."""
    commands = add_command_group(
        subparsers, "mixquery",
        help="chapter 6: MixQuery, retrieval of songs from stems of different songs (index, query)",
        description=(
            "Chapter 6: MixQuery. Songs of a catalog are cut into 10-s segments and every segment is embedded per "
            "instrumental part; a query set of stems (song, part, segment) retrieves songs by the mean distance "
            "(cosine or Euclidean, fixed when the index is built) between each part's mean raw query embedding "
            "and the song's, over the query's parts, minimum over each song's segments (thesis eq. 6.1-6.2), and "
            "one stem query finds the most similar stems of other songs."
        ),
    )

    index = commands.add_parser(
        "index",
        help="embed a catalog's 10-s segments per part and write the index folder",
        description=(
            "Build the MixQuery index of a catalog (a split of a Slakh-format folder): every 10-s segment from the "
            "start of each song (a shorter last segment when at least the backend's minimum length; songs shorter "
            "than that are skipped with a warning) is embedded per part by the backend, stored as unit vectors beside "
            "their norms, and written atomically with the format version, the search distance, the model hash and "
            "a fingerprint of the catalog's audio. The "
            "backend's model is trained first when it is not cached. A fresh index of the same model and catalog is "
            "reused; a stale one (catalog changed, model retrained, other distance or format) is rebuilt. Prints one "
            "JSON line: the folder, songs, segments, parts, skipped songs, distance and where it came from."
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
    add_preset(index)
    index.add_argument(
        "--backend", choices=BACKEND_NAMES, default="csn",
        help="embeddings: csn = the chapter-4 CSN subspaces straight from the mix (condition (i) of Table 4.2); "
             "separated = our U-Net's stems + the chapter-3 per-part networks; mert = a local MERT model on the "
             "separated stems with the heads of 'partsim train mixquery-head' (needs transformers and "
             "--mert-model); track = chapter 3's track-level network on the mix (one part, 'mix': not part-level, "
             "the evaluation's peer); default: %(default)s",
    )
    add_out_dir(index, "the index (default: <cache>/mixquery/<backend>-<hash of model, catalog and split>); never "
                       "inside the catalogue")
    add_data_root(index)
    add_device(index)
    index.add_argument(
        "--mert-model", type=Path, default=None, metavar="DIR",
        help="local MERT model folder (config.json, weights, preprocessor_config.json) for --backend mert; never "
             "downloaded",
    )
    index.add_argument("--mert-heads", type=Path, default=None, metavar="DIR",
                       help="heads trained by 'partsim train mixquery-head' for --backend mert (without: the mean "
                            "over MERT layers, not the thesis's embedding)")
    index.add_argument(
        "--distance", choices=("auto", "cosine", "euclidean"), default="auto",
        help="distance d of eq. 6.2 every search of the index uses: cosine (the thesis's), euclidean, or auto = "
             "cosine for every backend except csn, which takes the distance 'partsim mixquery run' chose for the "
             "preset (by MRR on validation pseudo pieces), else euclidean (the CSN's training distance); "
             "default: %(default)s",
    )
    add_seed(index)
    add_fresh(index, "an index partsim wrote there (rebuild even when it verifies)")
    add_no_progress(index)
    index.set_defaults(func=run_index)

    query = commands.add_parser(
        "query",
        help="retrieve songs for a query set of stems, or similar stems of one stem",
        description=(
            "Query a MixQuery index. Without --similar: songs ranked by the mean over the query's parts of the "
            "distance (the index's: cosine or Euclidean) to the mean raw embedding of each part's stem queries "
            "(thesis eq. 6.1-6.2), minimum over each song's segments; each line gives the song, its distance and "
            "the segment where it matched best. With "
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

    run = commands.add_parser(
        "run",
        help="chapter 6: ground-truth evaluation on pseudo pieces (recall@10/@100, MRR) and a simulated C0-C3 test",
        description=(
            "Run chapter 6's evaluation (beyond the thesis, which had no ground truth): a catalog of the test songs "
            "of the embedded dataset plus pseudo pieces mixed from their parts (for each query 'part p of song A + "
            "part q of song B': pieces with exactly those two parts, distractors sharing one of them, random "
            "pieces) is ranked with each backend by eq. 6.1 (mean of the raw query embeddings) and eq. 6.2; "
            "recall@10, recall@100 and MRR of the pieces containing both query parts are reported per backend and "
            "part combination with 95 % bootstrap intervals over queries and seeds, beside the track-level network "
            "(chapter 3's mix network) and random ranking (exact expectation). The CSN's distance (cosine or "
            "Euclidean) is chosen by MRR on validation pseudo pieces, never the test split. Then the thesis's C0-C3 "
            "ABX protocol (6.4.1) is run with SIMULATED listeners (exact binomial intervals). Needs the embedded "
            "generator's dataset (real Slakh2100 has no ground truth); missing models are trained first. Prints "
            "the tables, the findings and a one-line JSON summary; --out writes the chapter JSON."
        ),
        epilog="Example: partsim mixquery run --preset smoke --seeds 3 --out ch6.json",
    )
    add_run_options(run)
    run.add_argument(
        "--backends", default="csn,separated", metavar="LIST",
        help=f"comma-separated part-level backends to evaluate, of {', '.join(EVALUATE_BACKENDS)}; default: "
             "%(default)s",
    )
    run.add_argument("--no-track-level", action="store_true",
                     help="leave out the track-level peer (chapter 3's mix network)")
    run.set_defaults(func=run_run)

    # ``partsim mixquery serve``: the web app of thesis Fig. 6.2 (partsim_core/mixquery/app.py).

    add_serve_parser(commands)
