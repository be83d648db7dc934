"""The one output rule of every command that writes: nothing partsim did not create is deleted, moved or replaced.

* A result **file** (``--out FILE``) is written atomically (temporary sibling, then a rename) with a ``"partsim"``
  provenance key. An existing file is replaced only with ``fresh=True`` *and* only when it carries that key (so it
  is partsim's own); without ``fresh`` the finished file is linked into place, which fails rather than replace a
  file that appeared meanwhile.
* An output **folder** (``--out-dir DIR``) is built under a temporary ``.DIR.w<pid>-<start>.*.partial`` name and
  renamed into place; it holds the marker file :data:`MARKER`. An existing folder is replaced only with
  ``fresh=True`` and only when it holds the marker (or a caller's ``is_own`` test recognises it); an empty folder
  may be used.
* An output may never be equal to, inside, or around an input (a dataset, a catalogue, an index being read).
* Symbolic links at the output path are never replaced (they are the user's).
* Temporary siblings left by killed runs are removed on the next run once their writer process is gone
  (:func:`partsim_core.data.cache.clean_stale_partials`).

Call the ``check_*`` functions before any expensive work (a mistake is reported at once), then write through
:func:`write_json_output` / :func:`output_directory`, which check again just before anything is replaced.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from partsim_core import __version__
from partsim_core.data.cache import (
    atomic_write_text,
    clean_stale_partials,
    make_partial_dir,
    move_into_place,
)
from partsim_core.errors import PartsimError

__all__ = [
    "MARKER", "PROVENANCE_KEY", "check_not_inside_inputs", "check_output_dir", "check_output_file",
    "clean_stale_partials", "finite_json", "is_partsim_file", "is_partsim_folder", "output_directory",
    "write_json_output",
]

#: File inside every folder partsim writes as an output; its presence is what allows ``--fresh`` to replace it.
MARKER = ".partsim-output"

#: Key of the provenance block in every JSON result file partsim writes.
PROVENANCE_KEY = "partsim"

#: A JSON file larger than this is not read to look for the provenance key (partsim's results are far smaller).
_MAX_PROVENANCE_BYTES = 256 * 1024 * 1024

PathLike = str | os.PathLike
Inputs = Iterable[PathLike | None]


def _resolved(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def check_not_inside_inputs(output: PathLike, inputs: Inputs, option: str = "output") -> None:
    """Refuse an output equal to, inside, or containing one of ``inputs`` (symbolic links resolved).

    Raises:
        PartsimError: naming the output and the input.
    """
    out = _resolved(output)
    for item in inputs:
        if item is None or str(item) == "":
            continue
        source = _resolved(item)
        if out == source:
            relation = "is"
        elif source in out.parents:
            relation = "is inside"
        elif out in source.parents:
            relation = "contains"
        else:
            continue
        raise PartsimError(f"{option} {str(output)!r} {relation} the input {str(item)!r}; choose an output outside "
                           "every input")


def is_partsim_file(path: PathLike) -> bool:
    """Whether ``path`` is a regular JSON file partsim wrote (a top-level object with the provenance key)."""
    path = Path(path)
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_PROVENANCE_BYTES:
            return False
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(data, dict) and isinstance(data.get(PROVENANCE_KEY), dict)


def is_partsim_folder(path: PathLike) -> bool:
    """Whether ``path`` is a real folder (not a link) holding :data:`MARKER`."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and (path / MARKER).is_file()


def _check_parents(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` must be a folder partsim can write in."""
    for parent in path.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise PartsimError(f"{option} {str(path)!r}: {str(parent)!r} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PartsimError(f"{option} {str(path)!r}: cannot write in {str(parent)!r} (permission denied)")
            return


def check_output_file(path: PathLike, inputs: Inputs = (), fresh: bool = False, option: str = "--out") -> Path:
    """Validate ``--out FILE`` before any work: a ``.json`` file path (every ``--out`` result is JSON) whose folder
    can be created, not an input, and either absent or (with ``fresh``) a file partsim wrote.

    Args:
        path: the file to write.
        inputs: paths the command reads (``None`` / ``""`` entries are ignored).
        fresh: allow replacing a result file partsim wrote earlier.
        option: the flag named in messages.

    Returns:
        ``path`` as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
        PartsimError: a folder, a name without ``.json``, a path under a file, an unwritable place, an input, or
            an existing file partsim may not replace.
    """
    path = Path(path).expanduser()
    if str(path) in ("", "."):
        raise PartsimError(f"{option} needs a file name")
    if path.suffix.lower() != ".json" and not path.is_dir():
        raise PartsimError(f"{option} {str(path)!r}: give a .json file name (the result is written as JSON)")
    check_not_inside_inputs(path, inputs, option)
    if path.is_symlink():
        raise PartsimError(f"{option} {str(path)!r} is a symbolic link; refusing to replace it (name a new file)")
    if path.is_dir():
        raise PartsimError(f"{option} {str(path)!r} is a folder; {option} names a file")
    _check_parents(path, option)
    if os.path.lexists(path):
        if not path.is_file():
            raise PartsimError(f"{option} {str(path)!r} exists and is not a regular file; refusing to replace it")
        if not is_partsim_file(path):
            raise PartsimError(f"{option} {str(path)!r} exists and was not written by partsim; refusing to replace it "
                               "(choose another file name)")
        if not fresh:
            raise PartsimError(f"{option} {str(path)!r} already exists; pass --fresh to replace it")
    return path


def write_json_output(path: PathLike, data: dict[str, Any], inputs: Inputs = (), fresh: bool = False,
                      command: str = "", option: str = "--out") -> Path:
    """Write a result dict as JSON to ``path`` under the output rule (checked again here), atomically.

    The file gets a ``"partsim"`` provenance block (``version``, ``command``) as its first key; that is what lets a
    later ``fresh`` run replace it. NaN is written as ``NaN`` (results may hold undefined cells).

    Raises:
        PartsimError: see :func:`check_output_file`, a write that fails (the message names the file and why), or a
            ``data`` that already holds the provenance key.
    """
    if PROVENANCE_KEY in data:
        raise ValueError(f"result data may not hold the key {PROVENANCE_KEY!r} (the provenance block)")
    path = check_output_file(path, inputs, fresh, option)
    payload = {PROVENANCE_KEY: {"version": __version__, "command": command}, **data}
    text = json.dumps(payload, indent=2, allow_nan=True, default=_json_default) + "\n"
    # Replace only partsim's own file (with fresh); anything else at the path, even one that appeared since the
    # check, makes the no-clobber link fail.
    replacing = fresh and is_partsim_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text, overwrite=replacing)
    except FileExistsError:
        raise PartsimError(f"{option} {str(path)!r} was created by something else while partsim ran; refusing to "
                           "replace it") from None
    except OSError as error:
        raise PartsimError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
    return path


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinity (Python or numpy float) replaced by ``None``, recursively through dicts,
    lists and tuples: a chapter's results as strict JSON, undefined cells ``null`` (see the README, *How findings
    are decided*)."""
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_output_dir(path: PathLike, inputs: Inputs = (), fresh: bool = False,
                     is_own: Callable[[Path], bool] | None = None, option: str = "--out-dir") -> Path:
    """Validate ``--out-dir DIR`` before any work: absent, empty, or (with ``fresh``) a folder partsim made.

    Args:
        path: the folder to write.
        inputs: paths the command reads.
        fresh: allow replacing an earlier partsim output folder.
        is_own: recognises partsim outputs written before the marker existed (e.g. a generated dataset's ground
            truth file); the marker is always recognised.
        option: the flag named in messages.

    Raises:
        PartsimError: a file, a link, a path under a file, an unwritable place, an input, or an existing folder
            partsim may not replace.
    """
    path = Path(path).expanduser()
    if str(path) in ("", "."):
        raise PartsimError(f"{option} needs a folder name that is not the current folder")
    check_not_inside_inputs(path, inputs, option)
    if path.is_symlink():
        raise PartsimError(f"{option} {str(path)!r} is a symbolic link; refusing to replace it (name a new folder)")
    if os.path.lexists(path) and not path.is_dir():
        raise PartsimError(f"{option} {str(path)!r} is a file; {option} names a folder")
    _check_parents(path, option)
    if path.is_dir():
        try:
            empty = not any(path.iterdir())
        except OSError as error:
            raise PartsimError(f"{option} {str(path)!r}: cannot list the folder ({error.strerror or error})") from None
        if not empty:
            own = is_partsim_folder(path) or (is_own is not None and is_own(path))
            if not own:
                raise PartsimError(f"{option} {str(path)!r} exists and holds files partsim did not write; refusing "
                                   "to replace it (choose a new or empty folder)")
            if not fresh:
                raise PartsimError(f"{option} {str(path)!r} already holds a partsim output; pass --fresh to "
                                   "replace it")
    return path


@contextlib.contextmanager
def output_directory(path: PathLike, inputs: Inputs = (), fresh: bool = False,
                     is_own: Callable[[Path], bool] | None = None, option: str = "--out-dir") -> Iterator[Path]:
    """Build an output folder under a temporary name and move it into place when the block succeeds.

    The finished folder holds :data:`MARKER`. An existing folder is replaced only after the new one is complete,
    and only under the rule of :func:`check_output_dir` (checked on entry and again just before the move). On error
    (or interruption) nothing at ``path`` changes and the temporary folder is removed; one left by a killed run is
    removed by the next run.

    Raises:
        PartsimError: see :func:`check_output_dir`; a folder that cannot be created (names the place and why).
    """
    path = check_output_dir(path, inputs, fresh, is_own, option)
    try:
        tmp = make_partial_dir(path)
    except OSError as error:
        raise PartsimError(f"cannot create a folder beside {str(path)!r}: {error.strerror or error}") from None
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"version": __version__}) + "\n", encoding="utf-8")
        check_output_dir(path, inputs, fresh, is_own, option)  # the rule still holds (nobody wrote there meanwhile)
        try:
            move_into_place(tmp, path)
        except OSError as error:
            raise PartsimError(f"cannot move the finished output into {str(path)!r}: "
                               f"{error.strerror or error}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
