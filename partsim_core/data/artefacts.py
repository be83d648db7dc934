"""The one get-or-compute cache of derived artefacts, and checksums that make every artefact verify itself.

An artefact (a separated-stem set, a catalogue index, test pseudo pieces, embeddings...) lives in
``cache_root()/<kind>/<key>/`` where the key hashes the producer's config *and* the fingerprint of the audio it
was computed from, so new audio (``data synth --seed 1``, another SoundFont) never reuses an old artefact. The
folder's ``manifest.json`` lists each file's size and BLAKE2b checksum; :func:`cached_artefact` verifies them
before reuse and recomputes when they do not match (a flipped byte never silently changes a result).
Checksums are computed once per process per (path, size, mtime) and read files in chunks (memory stays small).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from partsim_core.data.cache import atomic_directory, atomic_write_json, cache_root, stable_hash
from partsim_core.errors import PartsimError

#: Name of the manifest inside every artefact folder.
MANIFEST = "manifest.json"

#: Bytes read per chunk while hashing.
_CHUNK = 1 << 22

_checksum_memo: dict[tuple[str, int, int], str] = {}


def file_checksum(path: str | os.PathLike) -> str:
    """BLAKE2b (128-bit) hex digest of a file, memoised per process by (resolved path, size, mtime)."""
    path = Path(path)
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    digest = _checksum_memo.get(memo_key)
    if digest is None:
        hasher = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                hasher.update(chunk)
        digest = _checksum_memo[memo_key] = hasher.hexdigest()
    return digest


def folder_files(folder: Path) -> list[Path]:
    """Every regular file under ``folder`` except the manifest, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: str | os.PathLike, info: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` listing size and checksum of every file in ``folder`` plus ``info``."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "blake2b": file_checksum(p)}
             for p in folder_files(folder)}
    manifest = {**info, "files": files}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def verify_manifest(folder: str | os.PathLike) -> str | None:
    """``None`` when ``folder``'s files match its manifest, else what is wrong (one line naming the file)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{folder / MANIFEST} is missing"
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return f"{folder / MANIFEST} is unreadable ({error})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return f"{folder / MANIFEST} lists no files"
    for name, entry in files.items():
        path = folder / name
        if not isinstance(entry, dict) or not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != entry.get("size"):
            return f"{path} has {path.stat().st_size} bytes, the manifest says {entry.get('size')}"
        if file_checksum(path) != entry.get("blake2b"):
            return f"{path} does not match its checksum (the file changed or is corrupt)"
    extra = {str(p.relative_to(folder)) for p in folder_files(folder)} - set(files)
    if extra:
        return f"{folder} holds files its manifest does not list: {', '.join(sorted(extra)[:3])}"
    return None


def artefact_dir(kind: str, config: Any, fingerprint: str) -> Path:
    """Folder of an artefact: ``cache_root()/kind/<hash of config and audio fingerprint>``."""
    if not fingerprint:
        raise PartsimError(f"artefact {kind!r} needs the fingerprint of the audio it is computed from")
    return cache_root() / kind / stable_hash({"config": config, "audio": fingerprint})


def cached_artefact(kind: str, config: Any, fingerprint: str, compute: Callable[[Path], None],
                    fresh: bool = False) -> Path:
    """Get-or-compute: the verified folder of an artefact, computed by ``compute(tmp_folder)`` when absent, when
    ``fresh``, or when its files do not match the manifest (then it is recomputed, never silently reused).

    Args:
        kind: artefact family (a folder under the cache root).
        config: everything that decides the content (JSON-serialisable).
        fingerprint: identity of the input audio (e.g. :meth:`DatasetHandle.fingerprint`).
        compute: writes the artefact's files into the folder it is given.
        fresh: recompute even when a valid artefact exists.
    """
    folder = artefact_dir(kind, config, fingerprint)
    if not fresh and folder.is_dir() and verify_manifest(folder) is None:
        return folder
    with atomic_directory(folder) as tmp:
        compute(tmp)
        write_manifest(tmp, {"kind": kind, "config": config, "audio": fingerprint})
    return folder
