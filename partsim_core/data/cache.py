"""Cache locations and atomic writes.

Every generated artefact (datasets, decoded stems, results, executed notebooks) lives under one git-ignored
cache root and is written atomically: to a temporary sibling first, then renamed, so that an interrupted run
never leaves a file or folder that looks complete. A temporary sibling is named after its writer process
(``.NAME.w<pid>-<start>-<host>.*.partial|.tmp|.old``); the next write of ``NAME`` removes those whose writer is
gone, so a killed run leaves nothing behind for long. :func:`atomic_directory` replaces what it finds and is for the
cache only; folders a user names go through :mod:`partsim_core.data.outputs`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from partsim_core.data import slakh
from partsim_core.errors import PartsimError

if TYPE_CHECKING:
    from partsim_core.data.slakh import SlakhDataset, Track

#: Environment variable that overrides the cache root.
CACHE_ENV = "PARTSIM_CACHE"


def repository_root() -> Path | None:
    """The source checkout this package runs from, or ``None`` when installed elsewhere."""
    candidate = Path(__file__).resolve().parents[2]
    return candidate if (candidate / "pyproject.toml").is_file() else None


def cache_root() -> Path:
    """Root of all generated data: ``$PARTSIM_CACHE``, else ``<repo>/.cache``, else ``~/.cache/partsim``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().resolve()
    repo = repository_root()
    return repo / ".cache" if repo is not None else Path.home() / ".cache" / "partsim"


def stable_hash(payload: Any, length: int = 16) -> str:
    """Hex digest of a JSON-serialisable payload (keys sorted), used as a cache key."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------------------------
# Temporary siblings: named after their writer process, so that those of killed runs can be recognised and removed
# ---------------------------------------------------------------------------------------------------------------

#: Suffixes of the temporary siblings partsim creates beside a file or folder it writes.
TEMPORARY_SUFFIXES: tuple[str, ...] = (".partial", ".old", ".tmp")

_TOKEN_PATTERN = re.compile(r"^w(\d+)-(\d+)-([0-9a-f]{6})$")


def _host_tag() -> str:
    """Short tag of this machine: a process id means something only on the machine (container) that issued it."""
    return hashlib.blake2b(platform.node().encode(), digest_size=3).hexdigest()


def _process_start_ticks(pid: int) -> int:
    """Start time of a process (clock ticks after boot, Linux ``/proc``), 0 where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text[text.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def writer_token(pid: int | None = None) -> str:
    """``w<pid>-<start ticks>-<host tag>``: identifies a process even after its id is reused by another one."""
    pid = os.getpid() if pid is None else pid
    return f"w{pid}-{_process_start_ticks(pid)}-{_host_tag()}"


def writer_alive(token: str) -> bool:
    """Whether the process a :func:`writer_token` names is still running; a token of another machine (a cache
    shared between containers) or of an unknown form counts as alive, since that cannot be known from here."""
    match = _TOKEN_PATTERN.match(token)
    if match is None or match.group(3) != _host_tag():
        return True
    pid, start = int(match.group(1)), int(match.group(2))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return True
    current = _process_start_ticks(pid)
    return not (start and current and current != start)


def _temporary_name(path: Path, kind: str) -> str:
    return f".{path.name}.{writer_token()}.{kind}"


def clean_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``path`` (``.NAME.w<pid>-<start>.*.partial|.old|.tmp``) whose writer process
    is gone: what killed runs left behind. Nothing else is touched (symbolic links are never followed).

    Returns:
        The removed paths.
    """
    path = Path(path)
    removed: list[Path] = []
    prefix = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith(TEMPORARY_SUFFIXES):
            continue
        token = name[len(prefix):].split(".", 1)[0]
        if _TOKEN_PATTERN.match(token) is None or writer_alive(token):
            continue
        candidate = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(candidate)
            elif entry.is_file(follow_symlinks=False):
                candidate.unlink()
            else:
                continue
        except OSError:
            continue
        removed.append(candidate)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    Args:
        path: destination file.
        data: its content.
        overwrite: ``False`` never replaces an existing ``path`` (even one created while writing): the finished
            file is linked into place, which fails when the name exists.

    Raises:
        FileExistsError: ``overwrite=False`` and ``path`` exists.
        OSError: the folder cannot be created or written (permission, space).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_name(path, ""), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~_current_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _link_new(tmp: str, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (atomically where the file system has hard links)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (some network or FAT file systems): check, then rename.
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Atomically write UTF-8 text (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, payload: Any, overwrite: bool = True) -> Path:
    """Atomically write ``payload`` as indented JSON (NaN is refused: JSON has no NaN)."""
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, allow_nan=False) + "\n",
                             overwrite=overwrite)


def make_partial_dir(path: str | os.PathLike) -> Path:
    """A new empty temporary folder beside ``path`` (``.NAME.w<pid>-<start>.XXXX.partial``) to build it in; stale
    ones of killed runs are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_name(path, ""), suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700; the finished folder gets the usual mode
    return tmp


def move_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished folder ``tmp`` to ``path``; an existing ``path`` is replaced (an empty folder is simply
    removed; any other folder is moved aside and deleted only after the new one is in place)."""
    if not os.path.lexists(path):
        os.replace(tmp, path)  # a folder created meanwhile: rename replaces it only when it is empty
        return
    if path.is_dir() and not path.is_symlink():
        with contextlib.suppress(OSError):
            path.rmdir()  # only succeeds on an empty folder
    if not os.path.lexists(path):
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=_temporary_name(path, ""), suffix=".old", dir=path.parent))
    os.replace(path, old / path.name)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``path`` only when the block succeeds.

    For folders inside partsim's cache only: an existing ``path`` is **replaced** (after the new one is complete).
    A folder a user names (``--out-dir``) goes through :func:`partsim_core.data.outputs.output_directory`, which
    never replaces what partsim did not create. On error the temporary folder is removed; one left by a killed run
    is removed by the next run that writes ``path``.
    """
    path = Path(path)
    tmp = make_partial_dir(path)
    try:
        yield tmp
        move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------------------------
# Decoded-stem cache (used by segments, sampling, training and evaluation in every chapter)
# ---------------------------------------------------------------------------------------------------------------

#: Bump when the layout or content of cached stem arrays changes; part of every stem cache key.
STEM_CACHE_FORMAT_VERSION = 1

#: Parts the stem cache serves besides the five groups.
MIX_PART = "mix"

#: Stem-cache entries whose header was checked in this process, with the (size, mtime) they had then.
_CHECKED_ENTRIES: dict[Path, tuple[int, int]] = {}


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of a source file for cache keys: resolved path, size and modification time (ns)."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class StemCache:
    """Decoded, resampled mono float32 audio per (track, part), stored once as ``.npy`` and memory-mapped.

    A part is one of the five groups (the sum of that group's stems, in the waveform domain) or ``"mix"`` (the
    track's mix file; the sum of all stems when a track has no mix file). A group the track lacks is zeros of the
    track's length. Arrays live under ``<root>/<key>/<track_id>_<part>.npy`` where the key hashes the identity
    (path, size, mtime) of every audio file of the track, the sample rate, the part and
    :data:`STEM_CACHE_FORMAT_VERSION`, so any change of inputs or parameters yields a new entry.
    """

    def __init__(self, dataset: SlakhDataset, sample_rate: int, root: Path | None = None) -> None:
        """Create a cache view.

        Args:
            dataset: The :class:`~partsim_core.data.slakh.SlakhDataset` the tracks come from.
            sample_rate: Rate every returned array has (Hz).
            root: Folder of cached arrays; default ``cache_root() / "stems"``.

        Raises:
            PartsimError: ``sample_rate`` is not a positive integer.
        """
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise PartsimError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        self.dataset = dataset
        self.sample_rate = int(sample_rate)
        self.root = Path(root) if root is not None else cache_root() / "stems"

    def key(self, track: Track, part: str) -> str:
        """Cache key of one (track, part) at this cache's sample rate."""
        return stable_hash(
            {
                "format": STEM_CACHE_FORMAT_VERSION,
                "sample_rate": self.sample_rate,
                "track": track.track_id,
                "part": part,
                "files": [file_identity(path) for path in track.audio_files()],
            }
        )

    def path(self, track: Track, part: str) -> Path:
        """Where the array of one (track, part) is (or will be) stored."""
        return self.root / self.key(track, part) / f"{track.track_id}_{part}.npy"

    def get(self, track: Track, part: str) -> np.ndarray:
        """Mono float32 audio of one part of a track at :attr:`sample_rate`, read-only and memory-mapped.

        Decodes and resamples only on the first request; later calls (and later processes) map the cached file
        after checking its header (type and length); a damaged entry is decoded again.

        Raises:
            PartsimError: unknown part, corrupt/NaN audio, or stems whose sample rate differs from the mix.
        """

        if part not in (*slakh.GROUPS, MIX_PART):
            raise PartsimError(f"unknown part {part!r}; expected one of {', '.join((*slakh.GROUPS, MIX_PART))}")
        groups = track.stems_by_group()
        if part != MIX_PART and part not in groups:
            zeros = np.zeros(self.track_length(track), dtype=np.float32)
            zeros.flags.writeable = False
            return zeros
        target = self.path(track, part)
        if target.is_file():
            cached = self._load_checked(target, track)
            if cached is not None:
                return cached
        # Absent, or damaged (unreadable header, wrong shape or type): decode again, replacing the entry atomically.
        audio = self._decode(track, part, groups)
        buffer = io.BytesIO()
        np.save(buffer, audio, allow_pickle=False)
        atomic_write_bytes(target, buffer.getvalue())
        return np.load(target, mmap_mode="r", allow_pickle=False)

    def _load_checked(self, target: Path, track: Track) -> np.ndarray | None:
        """The memory-mapped entry when its header says what it must hold (1-D float32 of the track's length),
        else ``None`` (a truncated or overwritten file is never served). The check runs once per process and
        file version (size, modification time)."""
        try:
            stat = target.stat()
            array = np.load(target, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        version = (stat.st_size, stat.st_mtime_ns)
        if _CHECKED_ENTRIES.get(target) == version:
            return array
        if array.dtype != np.float32 or array.shape != (self.track_length(track),):
            return None
        _CHECKED_ENTRIES[target] = version
        return array

    def get_all(self, track: Track) -> dict[str, np.ndarray]:
        """The five groups (in :data:`~partsim_core.INSTRUMENTS` order) and ``"mix"`` of one track."""

        return {part: self.get(track, part) for part in (*slakh.GROUPS, MIX_PART)}

    def track_length(self, track: Track) -> int:
        """Length of the track in samples at :attr:`sample_rate`, from file headers (no decoding).

        The native length is the mix's (else the longest stem's); resampling by ``up/down`` gives
        ``ceil(n * up / down)`` samples, as ``scipy.signal.resample_poly`` does.
        """

        native_rate = slakh.track_sample_rate(track)
        divisor = math.gcd(native_rate, self.sample_rate)
        up, down = self.sample_rate // divisor, native_rate // divisor
        return -(-self._native_length(track) * up // down)

    def _decode(self, track: Track, part: str, groups: dict) -> np.ndarray:

        native_rate = slakh.track_sample_rate(track)
        if part == MIX_PART and track.mix_path is not None:
            return slakh.load_audio(track.mix_path, self.sample_rate)
        stems = [stem for members in groups.values() for stem in members] if part == MIX_PART else groups[part]
        if not stems:
            raise PartsimError(f"{track.folder}: track has neither a mix nor stem audio")
        # Resampling is linear: sum the stems at their native rate, resample once.
        decoded = [slakh.load_audio(stem.audio_path, native_rate) for stem in stems]
        length = self._native_length(track)
        total = np.zeros(length, dtype=np.float32)
        for audio in decoded:
            n = min(length, len(audio))
            total[:n] += audio[:n]
        return slakh.resample(total, native_rate, self.sample_rate)

    @staticmethod
    def _native_length(track: Track) -> int:

        if track.mix_path is not None:
            return int(slakh.audio_info(track.mix_path).frames)
        return max(slakh.audio_info(stem.audio_path).frames for stem in track.stems if stem.audio_path is not None)
