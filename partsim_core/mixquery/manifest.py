"""The MixQuery index manifest (``index.json``): its schema, its own checksum, and the verification of the array files.

Every index folder written by :func:`~partsim_core.mixquery.index_build.build_index` holds ``index.json`` with, besides
the description of the index (backend, model hash, catalog, parts, songs and their segments):

* ``distance`` (format 3): the search distance of eq. 6.2, ``cosine`` or ``euclidean``;
* ``files``: for ``vectors.npy``, ``present.npy`` and (format 3) ``norms.npy`` (the raw embeddings' norms, so
  that eq. 6.1 averages raw embeddings) the BLAKE2b checksum
  (:func:`~partsim_core.data.artefacts.file_checksum`), the size in bytes, the array shape and dtype;
* ``ann`` (optional, indexes of at least :data:`~partsim_core.mixquery.ann.ANN_MIN_SEGMENTS` segments built
  since it exists): ``nlist`` and ``seed`` of the saved approximate index, whose two files (:data:`ANN_FILES`:
  k-means centroids and the list of every row, per part) are in ``files`` like the others, so that opening a large
  index loads its inverted files instead of training them (:func:`open_ann`). An index without ``ann`` (built
  before, or smaller) still opens: its approximate search is trained when opened, as before; ``partsim mixquery
  index --fresh`` rebuilds it with the saved one;
* ``checksum``: BLAKE2b of the canonical JSON of every other field of ``index.json``, so that an edited manifest
  (swapped song ids, reordered parts, changed segment bounds) is noticed, not silently searched.

:func:`verify_index` checks all of it - the schema (types, counts, consistency of songs, segments and shapes), the
manifest checksum, every file's size, checksum, ``.npy`` header (shape, dtype) and that every vector is finite -
and raises a :class:`~partsim_core.errors.PartsimError` naming the damaged file and the command that rebuilds the
index. The expensive part (hashing and the finiteness scan, a few seconds per GB) runs once per process and file
version: it is memoised by (path, size, mtime). :func:`index_problem` returns the same message instead of raising
(``partsim mixquery index`` rebuilds instead of reusing when it is not ``None``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from partsim_core.data.artefacts import file_checksum
from partsim_core.data.cache import atomic_write_json, cache_root
from partsim_core.errors import PartsimError

#: Bump when the layout or meaning of the index files changes; an index of another version is refused.
FORMAT_VERSION = 3

INDEX_FILE, VECTORS_FILE, PRESENT_FILE, NORMS_FILE = "index.json", "vectors.npy", "present.npy", "norms.npy"

#: The array files of an index, in the order :func:`open_arrays` returns them.
ARRAY_FILES: tuple[str, ...] = (VECTORS_FILE, PRESENT_FILE, NORMS_FILE)

#: The saved approximate index (optional; written for indexes of at least
#: :data:`~partsim_core.mixquery.ann.ANN_MIN_SEGMENTS` segments): float32 ``(n_parts, nlist, D)`` k-means centroids
#: of every part's inverted file and int32 ``(n_segments, n_parts)`` the list of every row in every part.
ANN_CENTROIDS_FILE, ANN_LISTS_FILE = "ann_centroids.npy", "ann_lists.npy"

#: The files of the saved approximate index, in the order :func:`open_ann` returns them.
ANN_FILES: tuple[str, ...] = (ANN_CENTROIDS_FILE, ANN_LISTS_FILE)

#: Search distances an index can be built for (:data:`partsim_core.mixquery.search.DISTANCES`).
INDEX_DISTANCES: tuple[str, ...] = ("cosine", "euclidean")

#: Rows scanned at a time by the finiteness check (bounds the memory it touches at once).
SCAN_ROWS = 65536

_verified: dict[tuple, bool] = {}
_verified_lock = threading.Lock()


def rebuild_command(meta: Any, folder: Path | str) -> str:
    """The ``partsim mixquery index`` command that rebuilds an index like the one ``meta`` describes."""
    meta = meta if isinstance(meta, dict) else {}
    catalog = meta.get("catalog") if isinstance(meta.get("catalog"), dict) else {}
    words = ["partsim mixquery index", f"--catalog {catalog.get('root', 'ROOT')}",
             f"--split {catalog.get('split', 'test')}", f"--backend {meta.get('backend', 'csn')}"]
    if meta.get("preset"):
        words.append(f"--preset {meta['preset']}")
    if meta.get("distance") in INDEX_DISTANCES:
        words.append(f"--distance {meta['distance']}")
    words += [f"--out-dir {folder}", "--fresh"]
    return " ".join(words)


def manifest_checksum(meta: dict[str, Any]) -> str:
    """BLAKE2b (128-bit) of the canonical JSON of ``meta`` without its ``checksum`` field."""
    body = {key: value for key, value in meta.items() if key != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).hexdigest()


def array_entry(path: Path) -> dict[str, Any]:
    """The ``files`` entry of one ``.npy`` file: checksum, size, shape and dtype (read from its header)."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return {"blake2b": file_checksum(path), "size": path.stat().st_size, "shape": [int(n) for n in array.shape],
            "dtype": str(array.dtype)}


def seal(meta: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``meta`` with ``files`` (entries of the array files in ``folder``, and of the saved approximate index's when
    ``meta`` has ``ann``) and ``checksum`` set (JSON-normalised)."""
    names = ARRAY_FILES + (ANN_FILES if meta.get("ann") is not None else ())
    sealed = json.loads(json.dumps({**meta, "files": {name: array_entry(folder / name) for name in names}}))
    sealed.pop("checksum", None)
    sealed["checksum"] = manifest_checksum(sealed)
    return sealed


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def check_schema(meta: Any, where: Path) -> dict[str, Any]:
    """Check the fields of a parsed ``index.json`` (the format version first, the checksum last).

    Raises:
        PartsimError: naming ``where`` and the first field that is missing, of the wrong type or inconsistent.
    """
    fix = f"rebuild it: {rebuild_command(meta, where.parent)}"

    def bad(what: str) -> PartsimError:
        return PartsimError(f"{where}: {what}; the index metadata is damaged, {fix}")

    if not isinstance(meta, dict):
        raise bad(f"expected a JSON object, found {type(meta).__name__}")
    found = meta.get("format_version")
    if found != FORMAT_VERSION:
        raise PartsimError(f"{where.parent}: index format version {found!r}, but this partsim reads version "
                           f"{FORMAT_VERSION}; {fix}")
    for key, kind in (("backend", str), ("model_hash", str), ("songs", list), ("parts", list), ("catalog", dict),
                      ("files", dict), ("checksum", str)):
        if not isinstance(meta.get(key), kind):
            raise bad(f"field {key!r} is missing or not a {kind.__name__}")
    for key in ("dim", "sample_rate", "n_segments"):
        if not _is_int(meta.get(key)) or meta[key] < 1:
            raise bad(f"field {key!r} must be a positive integer, found {meta.get(key)!r}")
    if not _is_number(meta.get("segment_seconds")) or meta["segment_seconds"] <= 0:
        raise bad(f"field 'segment_seconds' must be a positive number, found {meta.get('segment_seconds')!r}")
    if meta.get("distance") not in INDEX_DISTANCES:
        raise bad(f"field 'distance' must be one of {', '.join(INDEX_DISTANCES)}, found {meta.get('distance')!r}")
    parts = meta["parts"]
    if not parts or not all(isinstance(part, str) and part for part in parts) or len(set(parts)) != len(parts):
        raise bad(f"field 'parts' must list distinct part names, found {parts!r}")
    catalog = meta["catalog"]
    for key in ("root", "split", "fingerprint"):
        if not isinstance(catalog.get(key), str):
            raise bad(f"field 'catalog.{key}' is missing or not a string")
    if not meta["songs"]:
        raise bad("the index lists no song")
    ids: set[str] = set()
    rows = 0
    for number, song in enumerate(meta["songs"]):
        if not isinstance(song, dict) or not isinstance(song.get("id"), str) or not song["id"]:
            raise bad(f"songs[{number}] must be an object with a non-empty string 'id'")
        if song["id"] in ids:
            raise bad(f"song {song['id']!r} is listed twice")
        ids.add(song["id"])
        stem_parts = song.get("stem_parts", [])
        if not isinstance(stem_parts, list) or not all(isinstance(part, str) for part in stem_parts):
            raise bad(f"songs[{number}].stem_parts must be a list of part names")
        segments = song.get("segments")
        if not isinstance(segments, list) or not segments:
            raise bad(f"songs[{number}] ({song['id']!r}) must have a non-empty list of segments")
        for bounds in segments:
            if (not isinstance(bounds, list) or len(bounds) != 2 or not all(_is_int(v) for v in bounds)
                    or not 0 <= bounds[0] < bounds[1]):
                raise bad(f"songs[{number}] ({song['id']!r}) has a segment {bounds!r}; expected [start, end] "
                          f"sample numbers with 0 <= start < end")
        rows += len(segments)
    if rows != meta["n_segments"]:
        raise bad(f"the songs have {rows} segments but 'n_segments' says {meta['n_segments']}")
    expected_shapes = {VECTORS_FILE: ([rows, len(parts), meta["dim"]], "float32"),
                       PRESENT_FILE: ([rows, len(parts)], "bool"),
                       NORMS_FILE: ([rows, len(parts)], "float32")}
    ann = meta.get("ann")
    if ann is not None:
        if (not isinstance(ann, dict) or not _is_int(ann.get("nlist")) or not 1 <= ann["nlist"] <= rows
                or not _is_int(ann.get("seed"))):
            raise bad("field 'ann' must give the integers 'nlist' (1 to the segments) and 'seed'")
        expected_shapes[ANN_CENTROIDS_FILE] = ([len(parts), ann["nlist"], meta["dim"]], "float32")
        expected_shapes[ANN_LISTS_FILE] = ([rows, len(parts)], "int32")
    for name, (shape, dtype) in expected_shapes.items():
        entry = meta["files"].get(name)
        if (not isinstance(entry, dict) or not isinstance(entry.get("blake2b"), str)
                or not _is_int(entry.get("size")) or entry.get("shape") != shape or entry.get("dtype") != dtype):
            raise bad(f"'files.{name}' must give blake2b, size, shape {shape} and dtype {dtype}")
    if meta["checksum"] != manifest_checksum(meta):
        raise bad("its checksum does not match its content (edited after the build?)")
    return meta


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """Parse and schema-check ``folder/index.json``.

    Raises:
        PartsimError: no index there, unreadable or damaged metadata (naming the file).
    """
    folder = Path(folder).expanduser()
    meta_path = folder / INDEX_FILE
    if not meta_path.is_file():
        raise PartsimError(f"{folder}: no MixQuery index here (no {INDEX_FILE}); build one with "
                           f"'partsim mixquery index --out-dir {folder}'")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise PartsimError(f"{meta_path}: unreadable index metadata ({str(error)[:200]}); rebuild it with "
                           f"'partsim mixquery index --out-dir {folder} --fresh'") from None
    return check_schema(meta, meta_path)


def _finite_everywhere(array: np.ndarray) -> bool:
    for first in range(0, array.shape[0], SCAN_ROWS):
        if not np.isfinite(array[first:first + SCAN_ROWS]).all():
            return False
    return True


def _open_verified(folder: Path, meta: dict[str, Any], name: str, fix: str, mmap: bool = False) -> np.ndarray:
    """One array file of a schema-checked manifest, verified: size and BLAKE2b checksum against ``files``, the
    ``.npy`` header (shape, dtype) against the manifest, and (float files) every value finite; the checksum and the
    scan run once per process and file version.

    Raises:
        PartsimError: a missing, truncated, altered or garbled file, or non-finite values, naming the file.
    """
    path = folder / name
    entry = meta["files"][name]
    try:
        stat = path.stat()
    except OSError as error:
        raise PartsimError(f"{path}: index file missing or unreadable ({error.strerror or error}); {fix}") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, entry["blake2b"])
    with _verified_lock:
        known = key in _verified
    if stat.st_size != entry["size"]:
        raise PartsimError(f"{path}: {stat.st_size} bytes, but {INDEX_FILE} records {entry['size']} "
                           f"(truncated or replaced); {fix}")
    if not known:
        try:
            digest = file_checksum(path)
        except OSError as error:
            raise PartsimError(f"{path}: unreadable ({error.strerror or error}); {fix}") from None
        if digest != entry["blake2b"]:
            raise PartsimError(f"{path}: checksum {digest} differs from the {entry['blake2b']} recorded in "
                               f"{INDEX_FILE}: the file was altered or damaged after the build; {fix}")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise PartsimError(f"{path}: not a readable .npy file ({str(error)[:200]}); {fix}") from None
    if list(array.shape) != entry["shape"] or str(array.dtype) != entry["dtype"]:
        raise PartsimError(f"{path}: holds {array.dtype} {tuple(array.shape)}, but {INDEX_FILE} records "
                           f"{entry['dtype']} {tuple(entry['shape'])}; {fix}")
    if not known:
        if array.dtype.kind == "f" and not _finite_everywhere(array):
            raise PartsimError(f"{path}: holds NaN or infinite vectors; {fix}")
        with _verified_lock:
            _verified[key] = True
    return array


def open_arrays(folder: Path, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verify the array files of a schema-checked manifest (see :func:`_open_verified`) and open them (``vectors``
    memory-mapped).

    Raises:
        PartsimError: a missing, truncated, altered or garbled file, or non-finite vectors, naming the file.
    """
    fix = f"rebuild it: {rebuild_command(meta, folder)}"
    arrays = [_open_verified(folder, meta, name, fix, mmap=name == VECTORS_FILE) for name in ARRAY_FILES]
    if not bool(np.all(arrays[2] >= 0)):
        raise PartsimError(f"{folder / NORMS_FILE}: holds negative norms; {fix}")
    return arrays[0], arrays[1], arrays[2]


def open_ann(folder: Path, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The saved approximate index of a schema-checked manifest, verified like the other array files:
    ``(centroids, lists)`` (see :data:`ANN_FILES`), or ``None`` for an index without one (built before it was
    saved, or below the size threshold: the approximate search then trains its inverted files when opened).

    Raises:
        PartsimError: a missing, truncated, altered or garbled file, non-finite centroids or list numbers outside
            ``0 .. nlist - 1``, naming the file and the command that rebuilds the index.
    """
    if meta.get("ann") is None:
        return None
    fix = f"rebuild it: {rebuild_command(meta, folder)}"
    centroids, lists = (_open_verified(folder, meta, name, fix) for name in ANN_FILES)
    if lists.size and (int(lists.min()) < 0 or int(lists.max()) >= int(meta["ann"]["nlist"])):
        raise PartsimError(f"{folder / ANN_LISTS_FILE}: names lists outside 0..{meta['ann']['nlist'] - 1}; {fix}")
    return centroids, lists


def verify_index(folder: str | os.PathLike) -> dict[str, Any]:
    """Check an index folder completely (manifest schema and checksum, every array file); return its manifest.

    Raises:
        PartsimError: the first problem found, naming the file and the command that rebuilds the index.
    """
    folder = Path(folder).expanduser()
    meta = read_manifest(folder)
    open_arrays(folder, meta)
    open_ann(folder, meta)
    return meta


def index_problem(folder: str | os.PathLike) -> str | None:
    """``None`` when :func:`verify_index` passes, else its message (``partsim mixquery index`` then rebuilds)."""
    try:
        verify_index(folder)
    except PartsimError as error:
        return str(error)
    return None


# --------------------------------------------------------------------------------------------------------------
# the distance an index is built for (``partsim mixquery index --distance``)
# --------------------------------------------------------------------------------------------------------------

#: ``--distance`` choices: ``auto`` or one of :data:`INDEX_DISTANCES`.
DISTANCE_CHOICES: tuple[str, ...] = ("auto", *INDEX_DISTANCES)

#: The backend whose ``auto`` distance is not the thesis's cosine.
CSN_BACKEND = "csn"

#: ``auto`` for the CSN when no chapter-6 run has recorded a choice: the CSN is trained with Euclidean distance and
#: its subspace norms carry whether a part is present, which the cosine distance discards.
CSN_FALLBACK_DISTANCE = "euclidean"


def csn_distance_record(preset: str) -> Path:
    """``<cache>/mixquery/csn-distance-<preset>.json``: the CSN's distance as ``partsim mixquery run`` chose it."""
    return cache_root() / "mixquery" / f"csn-distance-{preset}.json"


def record_csn_distance(preset: str, chosen: str, evidence: dict[str, Any]) -> Path:
    """Record the CSN's distance chosen by chapter 6's run (on validation pieces) for ``auto`` indexes.

    Raises:
        PartsimError: ``chosen`` is not a distance.
    """
    if chosen not in INDEX_DISTANCES:
        raise PartsimError(f"unknown distance {chosen!r}; choose one of: {', '.join(INDEX_DISTANCES)}")
    return atomic_write_json(csn_distance_record(preset),
                             {"preset": preset, "distance": chosen, "selection": evidence})


def recorded_csn_distance(preset: str) -> str | None:
    """The distance :func:`record_csn_distance` stored for ``preset``, or ``None`` (none, unreadable, invalid)."""
    try:
        record = json.loads(csn_distance_record(preset).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    distance = record.get("distance") if isinstance(record, dict) else None
    return distance if distance in INDEX_DISTANCES else None


def resolve_distance(requested: str, backend: str, preset: str) -> tuple[str, str]:
    """``(distance, why)`` of ``--distance``: a named distance as given; ``auto`` = cosine (the thesis's) for every
    backend except the CSN, which takes the choice ``partsim mixquery run`` recorded for ``preset`` (measured by
    MRR on validation pseudo pieces, never on test data), else :data:`CSN_FALLBACK_DISTANCE`.

    Raises:
        PartsimError: an unknown ``requested``.
    """
    if requested not in DISTANCE_CHOICES:
        raise PartsimError(f"unknown distance {requested!r}; choose one of: {', '.join(DISTANCE_CHOICES)}")
    if requested != "auto":
        return requested, "given"
    if backend != CSN_BACKEND:
        return "cosine", "auto: the thesis's cosine"
    recorded = recorded_csn_distance(preset)
    if recorded is not None:
        return recorded, f"auto: chosen by 'partsim mixquery run --preset {preset}' on validation pieces"
    return CSN_FALLBACK_DISTANCE, (f"auto: no 'partsim mixquery run --preset {preset}' choice recorded; the CSN's "
                                   f"training distance")
