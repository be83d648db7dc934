"""Exception type for errors a user can fix (bad input, missing files, unknown parameters), and one helper that turns
the failures of reading a user's file into such an error.

The ``partsim`` command prints these as one line (``partsim: error: ...``) and exits with status 2, without a
traceback; anything else that escapes a command is a bug (exit 1, traceback in a crash log).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


class PartsimError(Exception):
    """A user-facing error whose message names the offending file or value."""


@contextlib.contextmanager
def reading_user_file(path: str | os.PathLike, what: str = "file") -> Iterator[None]:
    """Turn the failures of reading a file the user gave into a :class:`PartsimError` naming it.

    Wrap only the read and decode of that one file (not the computation that follows), so that a bug elsewhere is
    not reported as bad input::

        with reading_user_file(path, "responses csv"):
            text = Path(path).read_text(encoding="utf-8")

    Raises:
        PartsimError: the file is missing, unreadable (permission, I/O), or not valid UTF-8 text.
    """
    try:
        yield
    except UnicodeDecodeError as error:
        raise PartsimError(f"{os.fspath(path)}: {what} is not UTF-8 text (invalid byte at position "
                           f"{error.start})") from None
    except FileNotFoundError:
        raise PartsimError(f"{os.fspath(path)}: {what} not found") from None
    except IsADirectoryError:
        raise PartsimError(f"{os.fspath(path)}: {what} expected, found a folder") from None
    except OSError as error:
        raise PartsimError(f"{os.fspath(path)}: cannot read the {what} ({error.strerror or error})") from None
