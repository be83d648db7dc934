"""The ``partsim`` command: one entry point, one sub-command group per book chapter.

Each group is a module of this package (``data``, ``train``, ``baseline``, ``csn``, ``mixquery``, ``perceptual``,
``book``) that exposes ``register_commands(subparsers)``, which adds a parser for the group with its own
sub-commands; every leaf parser sets ``func`` to a callable taking the parsed arguments and returning an exit code.

The error contract, the same for every command:

* an error the user can fix (:class:`~partsim_core.errors.PartsimError`; a permission, disk-space or read-only
  failure; a missing or wrong-kind file under a path given on the command line) prints
  ``partsim: error: <what, which file or value>`` and exits with status 2, without a traceback;
* a usage error (unknown option, bad value) is argparse's: usage line, message, status 2;
* anything else is a bug: one line saying so and naming a crash log (``<cache>/logs/crash-*.txt``) that holds the
  traceback, status 1; ``--debug`` (anywhere on the command line) prints the traceback instead;
* Ctrl-C: ``partsim: interrupted``, status 130.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path

from partsim_core import __version__
from partsim_core.data.cache import atomic_write_text, cache_root
from partsim_core.errors import PartsimError

#: Modules that contribute a command group, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "partsim_core.cli.data",
    "partsim_core.cli.train",
    "partsim_core.cli.baseline",
    "partsim_core.cli.csn",
    "partsim_core.cli.mixquery",
    "partsim_core.cli.perceptual",
    "partsim_core.cli.book",
)

#: Failures of the user's environment, never of partsim's logic: reported as errors (status 2) whatever the file.
ENVIRONMENT_ERRNOS: frozenset[int] = frozenset(
    code for code in (errno.EACCES, errno.EPERM, errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS,
                      errno.ENAMETOOLONG, errno.EFBIG)
    if code is not None)

#: Failures that are the user's when the file is one they named (else they may be a bug of partsim).
PATH_ERRNOS: frozenset[int] = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY})

#: Folder under the cache root where tracebacks of unexpected errors are written.
CRASH_LOG_FOLDER = "logs"


def build_parser() -> argparse.ArgumentParser:
    """Create the full argument parser (all groups registered, ``--debug`` accepted by every command, long options
    only in full)."""
    parser = argparse.ArgumentParser(
        prog="partsim",
        description="partsim: reproduce the thesis on part-level music similarity, chapter by chapter. Each "
                    "group below holds the commands of one chapter (or of the data and the book).",
        epilog="Run 'partsim GROUP --help' or 'partsim GROUP COMMAND --help' for details. The flags mean the same "
               "in every command: --out FILE writes a result file, --out-dir DIR a folder, --fresh replaces "
               "partsim's own earlier output (never a file or folder partsim did not write). Errors print "
               "'partsim: error: ...' (exit status 2); an unexpected failure names a crash log (exit status 1).",
    )
    parser.add_argument("--version", action="version", version=f"partsim {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of any error (default: one line; a crash log for bugs)")
    subparsers = parser.add_subparsers(title="command groups", dest="group", metavar="GROUP")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_commands(subparsers)
    parser.allow_abbrev = False
    for sub in _descendants(parser):
        _add_debug(sub)
        # No prefixes of long options: '--out' must never be taken for '--out-dir' (a file is not a folder).
        sub.allow_abbrev = False
    return parser


def _descendants(parser: argparse.ArgumentParser) -> Iterable[argparse.ArgumentParser]:
    for action in parser._actions:  # argparse offers no public walk over sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield child
                yield from _descendants(child)


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too (``partsim data synth --debug``); SUPPRESS keeps the top-level value."""
    try:
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    except argparse.ArgumentError:  # the command defines its own --debug
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``partsim`` command; returns the process exit code (see the module docstring for the contract)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # A group without a command: show that group's help (or the top-level help).
        getattr(args, "group_parser", parser).print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    try:
        return int(func(args) or 0)
    except PartsimError as error:
        return _user_error(str(error), debug)
    except KeyboardInterrupt:
        print("partsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (``partsim ... | head``): stop quietly, as other command-line tools do.
        _silence_stdout()
        return 141
    except OSError as error:
        if _is_users(error, args):
            return _user_error(_os_error_text(error), debug)
        return _crash(error, argv, debug)
    except Exception as error:  # noqa: BLE001 - the one place where every bug is caught, logged and reported
        return _crash(error, argv, debug)


def _user_error(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc(file=sys.stderr)
    print(f"partsim: error: {message}", file=sys.stderr)
    return 2


def _command_line_paths(args: argparse.Namespace) -> list[Path]:
    """Every option value that could name a file or folder (strings and paths, also inside lists); the current
    folder, its ancestors and the home folder are left out (everything would be "under" them)."""
    too_wide = {Path.cwd().resolve(), *Path.cwd().resolve().parents, Path.home().resolve()}
    paths = []
    for value in vars(args).values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)) and str(item):
                try:
                    path = Path(item).expanduser().resolve()
                except (OSError, RuntimeError, ValueError):
                    continue
                if path not in too_wide:
                    paths.append(path)
    return paths


def _is_users(error: OSError, args: argparse.Namespace) -> bool:
    """Whether an OSError is the user's to fix: an environment failure, or a path failure on a path they named."""
    if error.errno in ENVIRONMENT_ERRNOS:
        return True
    if error.errno not in PATH_ERRNOS or error.filename is None:
        return False
    named = _command_line_paths(args)
    for filename in (error.filename, error.filename2):
        if filename is None:
            continue
        try:
            path = Path(os.fsdecode(filename)).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if any(path == item or item in path.parents for item in named):
            return True
    return False


def _os_error_text(error: OSError) -> str:
    reason = error.strerror or str(error)
    names = [os.fsdecode(name) for name in (error.filename, error.filename2) if name is not None]
    return f"{' -> '.join(repr(name) for name in names)}: {reason}" if names else reason


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _crash(error: BaseException, argv: Sequence[str] | None, debug: bool) -> int:
    """Report a bug: one line naming the crash log (or, with ``--debug``, the traceback); exit status 1."""
    text = traceback.format_exc()
    summary = " ".join(f"{type(error).__name__}: {error}".split())
    if len(summary) > 300:
        summary = summary[:297] + "..."
    if debug:
        print(text, end="", file=sys.stderr)
        print(f"partsim: internal error (a bug in partsim): {summary}", file=sys.stderr)
        return 1
    log = write_crash_log(text, sys.argv[1:] if argv is None else list(argv))
    where = f"the traceback is in {log}" if log is not None else "no crash log could be written"
    print(f"partsim: internal error (a bug in partsim): {summary}; {where} (rerun with --debug to print it)",
          file=sys.stderr)
    return 1


def write_crash_log(text: str, argv: Sequence[str]) -> Path | None:
    """Write a traceback with the command line and versions to ``<cache>/logs/crash-<UTC time>-<pid>.txt`` (the
    system's temporary folder when the cache is not writable); ``None`` when neither can be written."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    content = (f"partsim {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
               f"command: partsim {' '.join(argv)}\n\n{text}")
    for folder in (lambda: cache_root() / CRASH_LOG_FOLDER, lambda: Path(tempfile.gettempdir()) / "partsim-logs"):
        try:
            return atomic_write_text(folder() / f"crash-{stamp}-{os.getpid()}.txt", content, overwrite=False)
        except OSError:
            continue
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
