"""The MixQuery index in memory (thesis 6.2-6.3): open an index folder, describe it, query it.

The folder is written by :func:`~partsim_core.mixquery.index_build.build_index` (its format is described there).
:meth:`MixQueryIndex.load` verifies the folder first (:mod:`partsim_core.mixquery.manifest`: the manifest's schema
and checksum, each file's checksum, ``.npy`` header and finiteness, once per process) and refuses, each time with
the command that fixes it: a damaged index, another format version, a backend or model hash other than the caller
expects (a retrained model), and a catalog whose fingerprint changed (stale) or vanished; ``build_index``
rebuilds instead of reusing in all those cases. The FAISS indices are built at load time (~0.6 s for 100,000
segments on 2 cores): the exact search of :mod:`partsim_core.mixquery.exact`, or above
:data:`~partsim_core.mixquery.ann.ANN_MIN_SEGMENTS` segments the approximate one of
:mod:`partsim_core.mixquery.ann` (``search="auto"``; ``"exact"`` / ``"ann"`` force one) from its saved inverted
files (verified like the rest; a damaged one is refused, and ``partsim mixquery index`` rebuilds the index).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import MIX_PART
from partsim_core.errors import PartsimError
from partsim_core.mixquery.ann import ANN_MIN_SEGMENTS, AnnSearcher, use_ann
from partsim_core.mixquery.catalog import SEGMENT_SECONDS, Catalog
from partsim_core.mixquery.exact import FaissSearcher
from partsim_core.mixquery.manifest import (
    FORMAT_VERSION,
    open_ann,
    open_arrays,
    read_manifest,
    rebuild_command,
)
from partsim_core.mixquery.search import (
    THESIS_K,
    SongHit,
    StemHit,
    StemQuery,
    check_distance,
    check_k,
)


class MixQueryIndex:
    """A loaded MixQuery index: songs, segments, audio of the catalog, and the two searches of chapter 6.

    Build with :func:`~partsim_core.mixquery.index_build.build_index`, open with :meth:`load` (or
    :meth:`from_arrays` for vectors in memory, e.g. the benchmark). Searches are exact (see
    :mod:`partsim_core.mixquery.exact`) below
    :data:`~partsim_core.mixquery.ann.ANN_MIN_SEGMENTS` segments and approximate from there on
    (:mod:`partsim_core.mixquery.ann`; ``search`` forces either); same API and output format, thread-safe.
    """

    def __init__(self, meta: dict, vectors: np.ndarray, present: np.ndarray, folder: Path | None = None,
                 catalog: Catalog | None = None, threads: int = 1, normalise: bool = False,
                 coarse: str = "fp16", shards: int | None = None, search: str = "auto",
                 ann_threshold: int = ANN_MIN_SEGMENTS, ann_options: dict[str, Any] | None = None,
                 norms: np.ndarray | None = None, trained: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Use :meth:`load` or :meth:`from_arrays`; ``meta`` has the fields of ``index.json`` (its ``distance``
        is the search distance); ``norms`` the raw norms beside unit ``vectors`` (``None`` with ``normalise``:
        computed from the raw ``vectors``); ``search``, ``ann_threshold`` and ``ann_options`` (keyword arguments
        of :class:`AnnSearcher`) choose the searcher; ``trained`` the saved inverted files of the approximate one
        (used unless ``ann_options`` asks for another ``nlist``: then they are trained anew)."""
        self.meta = meta
        #: Search distance of eq. 6.2 (``cosine`` or ``euclidean``), from the manifest.
        self.distance = check_distance(str(meta.get("distance", "cosine")))
        self.folder = Path(folder) if folder is not None else None
        self._parts = tuple(meta["parts"])
        self._songs = [str(song["id"]) for song in meta["songs"]]
        self._song_index = {song: number for number, song in enumerate(self._songs)}
        if len(self._song_index) != len(self._songs):
            raise PartsimError("index lists a song twice")
        self._stem_parts = [frozenset(song.get("stem_parts", self._parts)) for song in meta["songs"]]
        counts = np.array([len(song["segments"]) for song in meta["songs"]], dtype=np.int64)
        if np.any(counts < 1):
            raise PartsimError("every song of an index needs at least one segment")
        self.first_row = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
        self.segment_counts = counts
        self.song_of_row = np.repeat(np.arange(len(self._songs), dtype=np.int64), counts)
        self.bounds = np.array([bounds for song in meta["songs"] for bounds in song["segments"]],
                               dtype=np.int64).reshape(-1, 2)
        expected = (int(counts.sum()), len(self._parts))
        if vectors.ndim != 3 or vectors.shape[:2] != expected or present.shape != expected:
            raise PartsimError(f"index vectors {vectors.shape} / present {present.shape} do not match its "
                               f"{expected[0]} segments x {expected[1]} parts")
        if use_ann(search, expected[0], ann_threshold):
            options = dict(ann_options or {})
            if trained is not None and options.get("nlist") in (None, trained[0].shape[1]):
                options["trained"] = trained
            self._searcher: FaissSearcher | AnnSearcher = AnnSearcher(
                vectors, self.song_of_row, present, normalise=normalise, norms=norms, distance=self.distance,
                **options)
        else:
            self._searcher = FaissSearcher(vectors, self.song_of_row, present, threads=threads,
                                           normalise=normalise, coarse=coarse, shards=shards, norms=norms,
                                           distance=self.distance)
        #: float32 ``(n_segments, n_parts, D)`` unit-or-zero vectors (``vectors.npy`` memory-mapped, after load).
        self.vectors = self._searcher.vectors
        #: float32 ``(n_segments, n_parts)`` raw norms: ``norms[..., None] * vectors`` are the raw embeddings.
        self.norms = self._searcher.norms
        #: bool ``(n_segments, n_parts)``: the song has a stem of that part.
        self.present = self._searcher.present
        self._catalog = catalog
        self._catalog_lock = threading.Lock()
        #: True when :func:`~partsim_core.mixquery.index_build.build_index` found this index already built,
        #: verified and fresh.
        self.reused = False
        #: Why :func:`~partsim_core.mixquery.index_build.build_index` did not reuse the index that was there
        #: (``None``: there was none).
        self.rebuild_reason: str | None = None

    # ---- opening ------------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | None = None, model_hash: str | None = None,
             check_catalog: bool = True, catalog: Catalog | None = None, threads: int = 1,
             coarse: str = "fp16", search: str = "auto", ann_threshold: int = ANN_MIN_SEGMENTS,
             ann_options: dict[str, Any] | None = None) -> MixQueryIndex:
        """Open an index folder and build its FAISS indices.

        Args:
            path: The index folder.
            backend: Expected backend name (``None``: any).
            model_hash: Expected model hash (``None``: any); another one means the model was retrained.
            check_catalog: Refuse when the catalog's audio changed since the build (stale) or is gone.
            catalog: The already opened catalog (saves re-reading its metadata).
            threads: FAISS threads (see :class:`~partsim_core.mixquery.exact.FaissSearcher`).
            coarse: FAISS candidate index, ``fp16`` or ``flat`` (results are exact either way).
            search: ``auto`` (approximate from ``ann_threshold`` segments on), ``exact`` or ``ann``
                (:mod:`partsim_core.mixquery.ann`).
            ann_threshold: Segments from which ``auto`` means approximate.
            ann_options: Keyword arguments of :class:`~partsim_core.mixquery.ann.AnnSearcher` (nlist, nprobe...).

        Raises:
            PartsimError: no index there, another format version, another backend or model hash, a stale or
                missing catalog, or files that do not fit ``index.json`` - each with the command that rebuilds it.
        """
        folder = Path(path).expanduser()
        meta = read_manifest(folder)
        fix = rebuild_command(meta, folder)
        if backend is not None and meta["backend"] != backend:
            raise PartsimError(f"{folder}: index built with backend {meta['backend']!r}, expected "
                               f"{backend!r}; rebuild it: {fix}")
        if model_hash is not None and meta["model_hash"] != model_hash:
            raise PartsimError(f"{folder}: index built with model {meta['model_hash']!r}, but the current "
                               f"{meta['backend']} model is {model_hash!r} (retrained?); rebuild it: {fix}")
        if check_catalog:
            catalog = cls._check_catalog(meta, folder, catalog, fix)
        vectors, present, norms = open_arrays(folder, meta)
        trained = open_ann(folder, meta)
        return cls(meta, vectors, present, folder=folder, catalog=catalog, threads=threads, coarse=coarse,
                   search=search, ann_threshold=ann_threshold, ann_options=ann_options, norms=norms,
                   trained=trained)

    @staticmethod
    def _check_catalog(meta: dict, folder: Path, catalog: Catalog | None, fix: str) -> Catalog:
        info = meta.get("catalog") or {}
        root, split = info.get("root"), info.get("split", "test")
        if catalog is None or catalog.root != Path(str(root)) or catalog.split != split:
            if not root or not Path(root).is_dir():
                raise PartsimError(f"{folder}: the catalog {root} this index was built from is gone; rebuild the "
                                   f"index from where the catalog is now: {fix}")
            catalog = Catalog(root, split=split, sample_rate=int(meta["sample_rate"]),
                              segment_seconds=float(meta.get("segment_seconds", SEGMENT_SECONDS)))
        if catalog.fingerprint() != info.get("fingerprint"):
            raise PartsimError(f"{folder}: index is stale: the audio of catalog {root} (split {split!r}) changed "
                               f"since it was built; rebuild it: {fix}")
        return catalog

    @classmethod
    def from_arrays(cls, vectors: np.ndarray, songs: Sequence[str], segments: Sequence[Sequence[tuple[int, int]]],
                    sample_rate: int, present: np.ndarray | None = None, parts: Sequence[str] = INSTRUMENTS,
                    segment_seconds: float = SEGMENT_SECONDS, threads: int = 1,
                    coarse: str = "fp16", shards: int | None = None, search: str = "auto",
                    ann_threshold: int = ANN_MIN_SEGMENTS,
                    ann_options: dict[str, Any] | None = None, distance: str = "cosine") -> MixQueryIndex:
        """An in-memory index of given vectors (no catalog: :meth:`segment_audio` is unavailable).

        Each part's vector is L2-normalised on the way into FAISS (zeros stay zero) and its norm kept, so the
        searches see the raw ``vectors`` (eq. 6.1 averages them).

        Args:
            vectors: ``(n_segments, n_parts, D)`` rows grouped by song in ``songs`` order.
            songs: Song ids.
            segments: Per song, its ``(start, end)`` sample bounds (one per row).
            sample_rate: Rate of the bounds.
            present: bool ``(n_segments, n_parts)``; default all True. A song's stem parts are the parts
                present in its first row.
            parts: Part names of the columns.
            segment_seconds: Nominal segment length.
            threads: FAISS threads.
            coarse: FAISS candidate index, ``fp16`` or ``flat`` (results are exact either way).
            shards: Row ranges of the song-search index searched in parallel (None: one per core, at most 4).
            search: ``auto``, ``exact`` or ``ann`` (see :meth:`load`).
            ann_threshold: Segments from which ``auto`` means approximate.
            ann_options: Keyword arguments of :class:`~partsim_core.mixquery.ann.AnnSearcher`.
            distance: ``cosine`` or ``euclidean``.

        Raises:
            PartsimError: inconsistent arguments, an unknown distance or NaN/infinite vectors.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim == 3 and not all(np.isfinite(vectors[first:first + 65536]).all()
                                         for first in range(0, vectors.shape[0], 65536)):
            raise PartsimError("vectors hold NaN or infinite values")
        if present is None:
            present = np.ones(vectors.shape[:2], dtype=bool)
        present = np.asarray(present, dtype=bool)
        if len(songs) != len(segments):
            raise PartsimError(f"{len(songs)} songs but {len(segments)} segment lists")
        firsts = np.r_[0, np.cumsum([len(bounds) for bounds in segments])[:-1]].astype(np.int64)
        meta = {
            "format_version": FORMAT_VERSION, "backend": "arrays", "model_hash": "", "preset": "",
            "distance": check_distance(distance),
            "parts": list(parts), "dim": int(vectors.shape[-1]) if vectors.ndim == 3 else 0,
            "sample_rate": int(sample_rate), "segment_seconds": float(segment_seconds), "catalog": None,
            "songs": [{"id": str(song), "stem_parts": [part for column, part in enumerate(parts)
                                                       if len(bounds) and present[first, column]],
                       "segments": [list(pair) for pair in bounds]}
                      for song, bounds, first in zip(songs, segments, firsts)],
            "skipped": [],
        }
        return cls(meta, vectors, present, threads=threads, normalise=True, coarse=coarse, shards=shards,
                   search=search, ann_threshold=ann_threshold, ann_options=ann_options)

    # ---- description ----------------------------------------------------------------------------------------------

    @property
    def songs(self) -> list[str]:
        """Song ids in catalog order."""
        return list(self._songs)

    @property
    def parts(self) -> tuple[str, ...]:
        """Parts that have embeddings (columns of :attr:`vectors`)."""
        return self._parts

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) of the segment bounds and of :meth:`segment_audio`."""
        return int(self.meta["sample_rate"])

    @property
    def segment_seconds(self) -> float:
        """Nominal segment length (10 s; a song's last segment may be shorter)."""
        return float(self.meta["segment_seconds"])

    @property
    def backend(self) -> str:
        """Backend that embedded the catalog."""
        return str(self.meta.get("backend", ""))

    @property
    def model_hash(self) -> str:
        """Identity of the backend's model."""
        return str(self.meta.get("model_hash", ""))

    @property
    def search_mode(self) -> str:
        """``"exact"`` (:class:`FaissSearcher`) or ``"ann"`` (:class:`~partsim_core.mixquery.ann.AnnSearcher`)."""
        return "ann" if isinstance(self._searcher, AnnSearcher) else "exact"

    @property
    def ann_trained_on_open(self) -> bool | None:
        """Whether the approximate search trained its inverted files when opened (``False``: loaded from the index
        folder; ``None``: the search is exact)."""
        return self._searcher.trained_here if isinstance(self._searcher, AnnSearcher) else None

    @property
    def shards(self) -> int:
        """Row ranges of the song-search index searched in parallel (see :class:`FaissSearcher`)."""
        return self._searcher.shards

    @property
    def n_segments(self) -> int:
        """Segments (rows) of all songs."""
        return int(self.song_of_row.size)

    @property
    def catalog_root(self) -> Path | None:
        """Folder of the catalog (``None`` for :meth:`from_arrays`)."""
        info = self.meta.get("catalog")
        return Path(info["root"]) if info else None

    @property
    def split(self) -> str | None:
        """Catalog split (``None`` for :meth:`from_arrays`)."""
        info = self.meta.get("catalog")
        return info["split"] if info else None

    @property
    def skipped(self) -> list[dict]:
        """Songs of the catalog left out as too short (``song``, ``seconds``, ``reason``)."""
        return list(self.meta.get("skipped", []))

    def _song(self, song: str) -> int:
        try:
            return self._song_index[song]
        except (KeyError, TypeError):
            raise PartsimError(f"unknown song {song!r}: not in this index ({len(self._songs)} songs)") from None

    def _segment_row(self, song: str, segment: int) -> tuple[int, int]:
        number = self._song(song)
        count = int(self.segment_counts[number])
        if isinstance(segment, bool) or not isinstance(segment, (int, np.integer)) or not 0 <= segment < count:
            raise PartsimError(f"song {song!r} has no segment {segment!r} (it has segments 0..{count - 1})")
        return number, int(self.first_row[number] + segment)

    def segments(self, song: str) -> list[tuple[int, float, float]]:
        """``(segment number, start s, end s)`` of every segment of ``song``.

        Raises:
            PartsimError: unknown song.
        """
        number = self._song(song)
        first, count = int(self.first_row[number]), int(self.segment_counts[number])
        rate = self.sample_rate
        return [(segment, float(start) / rate, float(end) / rate)
                for segment, (start, end) in enumerate(self.bounds[first:first + count].tolist())]

    def has_part_audio(self, song: str, part: str) -> bool:
        """Whether ``song`` has a stem of ``part`` (always True for ``"mix"``).

        Raises:
            PartsimError: unknown song or part.
        """
        number = self._song(song)
        if part == MIX_PART:
            return True
        if part not in self._parts and part not in INSTRUMENTS:
            raise PartsimError(f"unknown part {part!r}; this index has {', '.join((*self._parts, MIX_PART))}")
        return part in self._stem_parts[number]

    def catalog(self) -> Catalog:
        """The catalog the index was built from (opened on first use).

        Raises:
            PartsimError: an index without a catalog (:meth:`from_arrays`) or a catalog that is gone.
        """
        with self._catalog_lock:
            if self._catalog is None:
                info = self.meta.get("catalog")
                if not info:
                    raise PartsimError("this index was built from arrays and has no catalog audio")
                if not Path(info["root"]).is_dir():
                    raise PartsimError(f"the catalog {info['root']} of index {self.folder} is gone; rebuild it: "
                                       f"{rebuild_command(self.meta, self.folder or 'DIR')}")
                self._catalog = Catalog(info["root"], split=info["split"], sample_rate=self.sample_rate,
                                        segment_seconds=self.segment_seconds)
            return self._catalog

    def segment_audio(self, song: str, part: str, segment: int) -> np.ndarray:
        """Float32 mono audio of one segment of a song's part (``"mix"`` allowed), read from the catalog at
        :attr:`sample_rate` (zeros for a part the song has no stem of).

        Raises:
            PartsimError: unknown song, part or segment; no catalog.
        """
        _, row = self._segment_row(song, segment)
        if part != MIX_PART and part not in INSTRUMENTS:
            raise PartsimError(f"unknown part {part!r}; the catalog has audio for "
                               f"{', '.join((*INSTRUMENTS, MIX_PART))}")
        start, end = (int(value) for value in self.bounds[row])
        audio = self.catalog().audio(song, part)
        out = np.zeros(end - start, dtype=np.float32)
        excerpt = np.asarray(audio[start:end], dtype=np.float32)
        out[:excerpt.shape[0]] = excerpt
        return out

    # ---- searching ------------------------------------------------------------------------------------------------

    def query_row(self, query: StemQuery) -> tuple[int, int]:
        """``(segment row, part column)`` of a stem query.

        Raises:
            PartsimError: unknown song, part or segment, or a part the song has no stem of (its vector is zero:
                there is nothing to search with; :meth:`has_part_audio` tells beforehand).
        """
        if not isinstance(query, StemQuery):
            raise PartsimError(f"expected a StemQuery, got {type(query).__name__}")
        number, row = self._segment_row(query.song, query.segment)
        if query.part not in self._parts:
            raise PartsimError(f"unknown part {query.part!r}; this index has embeddings of "
                               f"{', '.join(self._parts)}")
        column = self._parts.index(query.part)
        if not self.present[row, column]:
            raise PartsimError(f"song {query.song!r} has no {query.part} stem: it cannot be a stem query")
        return row, column

    def similar_stems(self, query: StemQuery, k: int = THESIS_K) -> list[StemHit]:
        """The ``k`` segments of other songs nearest to ``query`` in its part (thesis 6.2.2: top 100).

        Only segments of songs that have a stem of that part are candidates. Ties: earlier catalog rows first.

        Raises:
            PartsimError: a bad query (see :meth:`query_row`) or ``k``.
        """
        k = check_k(k)
        row, column = self.query_row(query)
        return [StemHit(self._songs[self.song_of_row[hit]], int(hit - self.first_row[self.song_of_row[hit]]),
                        distance) for hit, distance in self._searcher.similar_stems(row, column, k)]

    def search_songs(self, queries: Sequence[StemQuery], k: int = THESIS_K,
                     exclude_query_songs: bool = False) -> list[SongHit]:
        """Songs ranked by the eq. 6.1-6.2 distance to the query set (thesis 6.2.4: top 100), best first.

        Args:
            queries: The query set (stem queries; several of one part are averaged, eq. 6.1).
            k: Songs returned.
            exclude_query_songs: Leave out the songs the query set's stems come from. Default False, as the
                thesis's app: 6.2.4 shows the top songs of the whole collection and says nothing about removing
                them (its query songs came from a separate 85-song list, but similar stems added in Step 2-2 are
                catalog songs and are not removed).

        Raises:
            PartsimError: an empty query set, a bad query or ``k``.
        """
        k = check_k(k)
        rows = [self.query_row(query) for query in queries]
        excluded = sorted({int(self.song_of_row[row]) for row, _ in rows}) if exclude_query_songs else []
        return [SongHit(self._songs[song], distance, int(best - self.first_row[song]))
                for song, distance, best in self._searcher.search_songs(rows, k, excluded)]

    def describe(self) -> dict[str, Any]:
        """Summary for the CLI: folder, backend, model hash, counts, parts, skipped songs, search and distance."""
        return {"index": str(self.folder) if self.folder else None, "backend": self.backend,
                "model_hash": self.model_hash, "preset": self.meta.get("preset", ""),
                "catalog": str(self.catalog_root) if self.catalog_root else None, "split": self.split,
                "songs": len(self._songs), "segments": self.n_segments, "parts": list(self._parts),
                "dim": int(self.vectors.shape[2]), "skipped": [entry["song"] for entry in self.skipped],
                "reused": bool(self.reused), "rebuild_reason": self.rebuild_reason, "search": self.search_mode,
                "distance": self.distance}
