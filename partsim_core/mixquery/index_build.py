"""Building a MixQuery index (thesis 6.2-6.3): embed every segment and part of a catalog and write the folder.

An index is a folder, written atomically (:func:`~partsim_core.data.cache.atomic_directory`: an interrupted or
failed build leaves nothing that looks complete):

* ``index.json`` - :data:`FORMAT_VERSION`, backend name, model hash, preset, catalog root + split + fingerprint
  (ids, paths, sizes and mtimes of its audio files), sample rate, segment seconds, parts, vector size, the songs in
  catalog order with their segments (sample bounds) and stem parts, the songs skipped as too short, and (format 2)
  ``files`` (BLAKE2b, size, shape, dtype of each array file) and ``checksum`` (of the manifest itself);
* ``vectors.npy`` - float32 ``(n_segments, n_parts, D)``, rows grouped by song in catalog order, each part's vector
  L2-normalised, or zero when the backend gave a zero vector or the song has no stem of that part (a zero vector
  is at cosine distance 1 to everything);
* ``norms.npy`` (format 3) - float32 ``(n_segments, n_parts)``: the L2 norm of each raw embedding (0 for a zero
  vector), so ``norms * vectors`` are the raw embeddings: eq. 6.1 averages those, as the thesis writes it, and
  the Euclidean distance is measured between them;
* ``present.npy`` - bool ``(n_segments, n_parts)``: the song has a stem of that part;
* ``ann_centroids.npy``, ``ann_lists.npy`` (from :data:`~partsim_core.mixquery.ann.ANN_MIN_SEGMENTS` segments
  on) - the approximate search's trained inverted files (:func:`~partsim_core.mixquery.ann.save_ann`), loaded
  instead of trained when the index is opened; an index without them (built before) opens and trains them, as
  before (``partsim mixquery index --fresh`` saves them).

The manifest also records the search ``distance`` (``cosine``, the thesis's, or ``euclidean``), chosen at build
time (``partsim mixquery index --distance``) and used by every search of the index.

:func:`build_index` reuses an index already there only when it opens (:meth:`~partsim_core.mixquery.index.
MixQueryIndex.load` verifies it) for the same backend, model, catalog, split and distance; otherwise it rebuilds.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from partsim_core import INSTRUMENTS, __version__
from partsim_core.data.cache import (
    atomic_directory,
    atomic_write_json,
    cache_root,
    stable_hash,
)
from partsim_core.errors import PartsimError
from partsim_core.mixquery.ann import ANN_MIN_SEGMENTS, save_ann
from partsim_core.mixquery.backends import EmbeddingBackend, song_embeddings
from partsim_core.mixquery.catalog import Catalog
from partsim_core.mixquery.index import MixQueryIndex
from partsim_core.mixquery.manifest import (
    FORMAT_VERSION,
    INDEX_FILE,
    NORMS_FILE,
    PRESENT_FILE,
    VECTORS_FILE,
    seal,
)
from partsim_core.mixquery.search import check_distance, normalise_parts, part_norms


def default_index_dir(backend: str, model_hash: str, catalog_root: str | os.PathLike, split: str) -> Path:
    """``cache_root()/mixquery/<backend>-<hash>``; the hash covers the model, the catalog folder and the split, so
    a retrained model or another catalog gets its own index and a changed catalog rebuilds in place."""
    key = stable_hash({"model": model_hash, "catalog": str(Path(catalog_root).expanduser().resolve()),
                       "split": split}, length=12)
    return cache_root() / "mixquery" / f"{backend}-{key}"


# --------------------------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------------------------


def build_index(catalog: Catalog | str | os.PathLike, backend: EmbeddingBackend,
                out: str | os.PathLike | None = None, *, split: str = "test", rebuild: bool = False,
                progress: bool = True, threads: int = 1, distance: str = "cosine",
                ann_threshold: int | None = None) -> MixQueryIndex:
    """Embed every segment and part of a catalog with ``backend`` and write the index folder (atomically).

    An existing index at ``out`` built by the same backend and model from the same, unchanged catalog is reused
    (``index.reused`` is True) unless ``rebuild`` - only when it verifies (:func:`~partsim_core.mixquery.manifest.
    verify_index`: schema, checksums, shapes, finite vectors); any other index there is replaced, and
    ``index.rebuild_reason`` says why (the verification's message, for a damaged one).

    Args:
        catalog: A :class:`Catalog` (at the backend's sample rate) or a Slakh-format root (then ``split`` applies).
        backend: Any :class:`~partsim_core.mixquery.backends.EmbeddingBackend`.
        out: Index folder; default :func:`default_index_dir`.
        split: Catalog split when ``catalog`` is a path (``test``, ..., ``all``).
        rebuild: Build even when a fresh index is already there.
        progress: Progress bar over songs.
        threads: FAISS threads of the returned index.
        distance: Search distance of eq. 6.2 recorded in the index, ``cosine`` or ``euclidean`` (an index built
            for the other distance is rebuilt).
        ann_threshold: From this many segments on, the approximate search's inverted files are trained and saved
            in the folder (:func:`~partsim_core.mixquery.ann.save_ann`): opening the index loads them instead of
            training them (``None``: :data:`~partsim_core.mixquery.ann.ANN_MIN_SEGMENTS`, where ``search="auto"``
            switches).

    Raises:
        PartsimError: a catalog at another sample rate than the backend's, a catalog without a usable song, or
            embeddings that are NaN/infinite or of the wrong shape (the message names the song; no folder is left).
    """
    check_distance(distance)
    if not isinstance(catalog, Catalog):
        catalog = Catalog(catalog, split=split, sample_rate=backend.sample_rate)
    if catalog.sample_rate != backend.sample_rate:
        raise PartsimError(f"catalog served at {catalog.sample_rate} Hz but backend {backend.name!r} reads "
                           f"{backend.sample_rate} Hz audio")
    folder = Path(out) if out is not None else default_index_dir(backend.name, backend.model_hash, catalog.root,
                                                                 catalog.split)
    reason = "rebuild requested" if rebuild else None
    if not rebuild and (folder / INDEX_FILE).is_file():
        try:
            existing = MixQueryIndex.load(folder, backend=backend.name, model_hash=backend.model_hash,
                                          catalog=catalog, threads=threads)
        except PartsimError as error:
            existing, reason = None, str(error)  # damaged, stale, other model or version: rebuilt below
        if existing is not None and existing.distance != distance:
            reason = f"built for the {existing.distance} distance, {distance} asked for"
        elif existing is not None and existing.catalog_root == catalog.root and existing.split == catalog.split:
            existing.reused = True
            return existing
        reason = reason or "built from another catalog or split"
    songs, skipped = catalog.plan(backend.min_seconds)
    if not songs:
        raise PartsimError(f"catalog {catalog.root} (split {catalog.split!r}) has no song of at least "
                           f"{backend.min_seconds:g} s ({len(skipped)} skipped); nothing to index")
    parts = tuple(backend.parts)
    n_rows = sum(len(song.segments) for song in songs)
    # Parts outside the catalog's five groups (e.g. a backend's vocals) cannot be checked: count them as present.
    has_stem = [[part not in INSTRUMENTS or part in song.stem_parts for part in parts] for song in songs]
    with atomic_directory(folder) as tmp:
        vectors = np.lib.format.open_memmap(tmp / VECTORS_FILE, mode="w+", dtype=np.float32,
                                            shape=(n_rows, len(parts), int(backend.dim)))
        present = np.zeros((n_rows, len(parts)), dtype=bool)
        norms = np.zeros((n_rows, len(parts)), dtype=np.float32)
        row = 0
        for song, stems in zip(tqdm(songs, desc=f"MixQuery index ({backend.name})", unit="song",
                                    disable=not progress), has_stem):
            try:
                raw = song_embeddings(backend, catalog, song)
            except PartsimError as error:
                raise PartsimError(f"{error}; the index was not written") from None
            block = normalise_parts(raw)
            lengths = part_norms(raw)
            block[:, ~np.asarray(stems, dtype=bool)] = 0.0
            lengths[:, ~np.asarray(stems, dtype=bool)] = 0.0
            rows = slice(row, row + len(song.segments))
            vectors[rows] = block
            norms[rows] = lengths
            present[rows] = stems
            row = rows.stop
        vectors.flush()
        del vectors
        np.save(tmp / PRESENT_FILE, present, allow_pickle=False)
        np.save(tmp / NORMS_FILE, norms, allow_pickle=False)
        threshold = ANN_MIN_SEGMENTS if ann_threshold is None else ann_threshold
        ann = save_ann(tmp, np.load(tmp / VECTORS_FILE, mmap_mode="r")) if n_rows >= threshold else None
        meta = {
            "format_version": FORMAT_VERSION,
            "backend": backend.name,
            "model_hash": backend.model_hash,
            "preset": backend.preset,
            "distance": distance,
            "parts": list(parts),
            "dim": int(backend.dim),
            "sample_rate": int(catalog.sample_rate),
            "segment_seconds": catalog.segment_seconds,
            "min_seconds": float(backend.min_seconds),
            "catalog": {"root": str(catalog.root), "split": catalog.split, "fingerprint": catalog.fingerprint(),
                        "tracks": len(catalog.tracks)},
            "n_segments": n_rows,
            "songs": [{"id": song.song_id, "samples": song.samples, "stem_parts": list(song.stem_parts),
                       "segments": [list(bounds) for bounds in song.segments]} for song in songs],
            "skipped": skipped,
            **({"ann": ann} if ann is not None else {}),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "partsim_version": __version__,
        }
        atomic_write_json(tmp / INDEX_FILE, seal(meta, tmp))
    index = MixQueryIndex.load(folder, backend=backend.name, model_hash=backend.model_hash, catalog=catalog,
                               threads=threads)
    index.reused = False
    index.rebuild_reason = reason
    return index
