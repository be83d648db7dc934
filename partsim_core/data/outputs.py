"""The one output rule of every command that writes: nothing partsim did not create is deleted, moved or replaced.

* A result **file** (``--out FILE``) is written atomically (temp + rename) with a ``"partsim"`` provenance key; an
  existing file is replaced only with ``fresh=True`` *and* only when it carries that key (so it is partsim's own).
* An output **folder** (``--out-dir DIR``) is built under a temporary ``.DIR.*.partial`` name and renamed into place;
  it holds the marker file :data:`MARKER`. An existing folder is replaced only with ``fresh=True`` and only when it
  holds the marker; an empty folder may be used.
* An output may never be equal to or inside an input (a dataset, a catalogue, an index being read).
* ``.partial`` folders left by killed runs are removed on the next run once their writer process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from partsim_core import __version__
from partsim_core.data.cache import atomic_write_text
from partsim_core.errors import PartsimError

#: File inside every folder partsim writes as an output; its presence is what allows ``--fresh`` to replace it.
MARKER = ".partsim-output"

#: Key of the provenance block in every JSON result file partsim writes.
PROVENANCE_KEY = "partsim"

#: Name of the file in a ``.partial`` folder that records the writer's process id.
WRITER_FILE = ".writer-pid"


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def check_not_inside_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output equal to, inside, or containing one of ``inputs``.

    Raises:
        PartsimError: naming the output and the input.
    """
    out = _resolved(output)
    for item in inputs:
        if item is None or str(item) == "":
            continue
        source = _resolved(item)
        if out == source or source in out.parents or out in source.parents:
            raise PartsimError(f"output {str(output)!r} overlaps the input {str(item)!r}; choose an output outside "
                               "every input")


def is_partsim_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a JSON file partsim wrote (a top-level object with the provenance key)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get(PROVENANCE_KEY), dict)


def check_output_file(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                      fresh: bool = False) -> Path:
    """Validate ``--out FILE`` before any work: a file path whose folder can be created, not an input, and either
    absent or (with ``fresh``) a file partsim wrote.

    Raises:
        PartsimError: a folder, a path under a file, an input, or an existing file partsim may not replace.
    """
    path = Path(path).expanduser()
    check_not_inside_inputs(path, inputs)
    if path.is_dir():
        raise PartsimError(f"--out {str(path)!r} is a folder; --out names a file (use --out-dir for a folder)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise PartsimError(f"--out {str(path)!r}: {str(parent)!r} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PartsimError(f"--out {str(path)!r}: cannot write in {str(parent)!r} (permission denied)")
            break
    if path.exists() or path.is_symlink():
        if not fresh:
            raise PartsimError(f"--out {str(path)!r} already exists; pass --fresh to replace it (only a file "
                               "partsim wrote is replaced)")
        if path.is_symlink() or not is_partsim_file(path):
            raise PartsimError(f"--out {str(path)!r} exists and was not written by partsim; refusing to replace it")
    return path


def write_json_output(path: str | os.PathLike, data: dict[str, Any], inputs: Iterable[str | os.PathLike | None] = (),
                      fresh: bool = False, command: str = "") -> Path:
    """Write a result dict as JSON to ``path`` under the output rule (checked again here), atomically.

    Raises:
        PartsimError: see :func:`check_output_file`, or a write that fails (the message names the file).
    """
    path = check_output_file(path, inputs, fresh)
    payload = {PROVENANCE_KEY: {"version": __version__, "command": command}, **data}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=True, default=_json_default) + "\n")
    except OSError as error:
        raise PartsimError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
    return path


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _writer_alive(partial: Path) -> bool:
    try:
        pid = int((partial / WRITER_FILE).read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove ``.NAME.*.partial`` folders beside ``path`` whose writer process is gone; returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for partial in path.parent.glob(f".{path.name}.*.partial"):
        if partial.is_dir() and (partial / WRITER_FILE).exists() and not _writer_alive(partial):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed


def check_output_dir(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                     fresh: bool = False) -> Path:
    """Validate ``--out-dir DIR`` before any work: absent, empty, or (with ``fresh``) a folder partsim made.

    Raises:
        PartsimError: a file, an input, or an existing folder partsim may not replace.
    """
    path = Path(path).expanduser()
    check_not_inside_inputs(path, inputs)
    if path.exists() and not path.is_dir():
        raise PartsimError(f"--out-dir {str(path)!r} is a file; --out-dir names a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise PartsimError(f"--out-dir {str(path)!r}: {str(parent)!r} is a file, not a folder")
            break
    if path.is_dir() and any(path.iterdir()):
        if not (path / MARKER).is_file():
            raise PartsimError(f"--out-dir {str(path)!r} exists and holds files partsim did not write; choose "
                               "another folder")
        if not fresh:
            raise PartsimError(f"--out-dir {str(path)!r} already holds a partsim output; pass --fresh to replace it")
    return path


@contextlib.contextmanager
def output_directory(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                     fresh: bool = False) -> Iterator[Path]:
    """Build an output folder under a temporary name and move it into place when the block succeeds.

    The finished folder holds :data:`MARKER`. An existing folder is replaced only after the new one is complete,
    and only under the rule of :func:`check_output_dir`. On error nothing at ``path`` changes.
    """
    path = check_output_dir(path, inputs, fresh)
    clean_stale_partials(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as error:
        raise PartsimError(f"cannot create a folder beside {str(path)!r}: {error.strerror or error}") from None
    (tmp / WRITER_FILE).write_text(str(os.getpid()))
    try:
        yield tmp
        (tmp / WRITER_FILE).unlink()
        (tmp / MARKER).write_text(json.dumps({"version": __version__}) + "\n")
        check_output_dir(path, inputs, fresh)  # the rule still holds (nobody wrote there meanwhile)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
