"""Exception type for errors a user can fix (bad input, missing files, unknown parameters).

The ``partsim`` command prints these as one line and exits non-zero, without a traceback.
"""


class PartsimError(Exception):
    """A user-facing error whose message names the offending file or value."""
