"""Audio examples of the book: one table of players, clips written as compressed OGG files beside the page.

A chapter builds a table of clips (rows x columns, e.g. mix and parts x tracks, or parts x ideal / separated) and
shows it with :func:`audio_table`. Every clip is written once, at the sample rate it is given (the model's), as an
OGG/Vorbis file into the *media folder* of the page, and the player references it by a relative URL; nothing is
inlined into the HTML.

Where the media folder is depends on who runs the notebook; the runner says so through two environment variables:

* ``partsim book build`` sets :data:`MEDIA_DIR_ENV` to a folder it copies beside the page (``<page>_media/``) and
  :data:`MEDIA_URL_ENV` to that folder's URL relative to the page;
* ``partsim book run`` sets them to ``<out-dir>/<chapter>_media`` beside the executed notebook and its HTML page;
* without them (a notebook opened by hand in Jupyter) the clips go to ``partsim_media/`` in the working folder,
  referenced relatively, which Jupyter resolves from the notebook's folder.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from partsim_core.errors import PartsimError

#: Environment variable naming the folder where a notebook's audio files go.
MEDIA_DIR_ENV = "PARTSIM_BOOK_MEDIA_DIR"

#: Environment variable holding the URL of that folder relative to the page that shows the notebook.
MEDIA_URL_ENV = "PARTSIM_BOOK_MEDIA_URL"

#: Media folder (relative to the working folder) when no runner set :data:`MEDIA_DIR_ENV`.
FALLBACK_MEDIA = "partsim_media"

#: Text of a cell whose clip is all zeros.
SILENT = "(silent)"

#: Text of a cell without a clip (``None``), e.g. a part the track does not have.
ABSENT = "(no such part)"

#: Vorbis quality of the written files (0..1 in libsndfile's scale; 0.4 is about 110 kbit/s at 44.1 kHz).
VORBIS_QUALITY = 0.4


def media_location() -> tuple[Path, str]:
    """The folder audio files are written to and its URL relative to the page (see the module docstring)."""
    folder = os.environ.get(MEDIA_DIR_ENV, "")
    if folder:
        return Path(folder), os.environ.get(MEDIA_URL_ENV, "").rstrip("/")
    return Path(FALLBACK_MEDIA), FALLBACK_MEDIA


def slug(text: str) -> str:
    """A file-name-safe form of a label: lower case, runs of other characters replaced by ``-``."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return cleaned or "clip"


def write_clip(audio: Any, sample_rate: int, path: Path) -> Path:
    """Write a mono clip as OGG/Vorbis at ``sample_rate`` (peaks above 1 are scaled down, never clipped).

    Raises:
        PartsimError: the clip is not one-dimensional, the rate is not positive, or the file cannot be written.
    """
    clip = np.asarray(audio, dtype=np.float32)
    if clip.ndim != 1 or clip.size == 0:
        raise PartsimError(f"an audio clip must be a non-empty 1-d array, got shape {clip.shape} for {path.name}")
    if int(sample_rate) <= 0:
        raise PartsimError(f"sample rate must be positive, got {sample_rate!r} for {path.name}")
    peak = float(np.max(np.abs(clip)))
    if peak > 1.0:
        clip = clip / peak
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        soundfile.write(tmp, clip, int(sample_rate), format="OGG", subtype="VORBIS",
                        compression_level=1.0 - VORBIS_QUALITY)
        os.replace(tmp, path)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as error:
        tmp.unlink(missing_ok=True)
        raise PartsimError(f"cannot write audio clip {path.name}: {error}") from None
    return path


def audio_player(audio: Any, sample_rate: int, name: str, seconds: float | None = 5.0) -> str:
    """HTML of one player for ``audio`` (its first ``seconds``), written to the media folder as ``<name>.ogg``.

    Returns ``(silent)`` for an all-zero clip and :data:`ABSENT` for ``None``.
    """
    if audio is None:
        return ABSENT
    clip = np.asarray(audio, dtype=np.float32)
    if seconds is not None:
        clip = clip[: max(1, round(seconds * sample_rate))]
    if clip.size == 0 or not np.any(clip):
        return SILENT
    folder, url = media_location()
    file_name = f"{slug(name)}.ogg"
    write_clip(clip, sample_rate, folder / file_name)
    source = f"{url}/{file_name}" if url else file_name
    return (f'<audio controls preload="none" src="{html.escape(source, quote=True)}" '
            f'type="audio/ogg"></audio>')


class AudioTable:
    """An HTML table of players that Jupyter (and the book) displays; ``html`` holds the markup."""

    def __init__(self, markup: str) -> None:
        self.html = markup

    def _repr_html_(self) -> str:
        return self.html


def audio_table(
    clips: Mapping[str, Mapping[str, Any]],
    sample_rate: int,
    name: str,
    seconds: float | None = 5.0,
    caption: str | None = None,
) -> AudioTable:
    """A table of audio players, one row per key of ``clips`` and one column per key of its inner mappings.

    Args:
        clips: ``row label -> column label -> cell``; a cell is a 1-d waveform at ``sample_rate`` (a player), a
            string (shown as text, e.g. "segment 3, distance 0.41"), or ``None`` (:data:`ABSENT`). Rows may have
            different columns; the header lists every column in first-seen order and missing cells stay empty.
        sample_rate: rate of every waveform (the model's: files are written at this rate, not resampled).
        name: prefix of the file names, unique within the chapter (e.g. ``"ch3-listen"``); files are
            ``<name>-<row>-<column>.ogg``.
        seconds: length of every clip from its start (``None``: the whole waveform).
        caption: text above the table.

    Returns:
        An object that notebooks display (``display(audio_table(...))`` or as a cell's last expression).

    Raises:
        PartsimError: an empty table, a waveform that is not 1-d, or a file that cannot be written.
    """
    if not clips:
        raise PartsimError(f"audio_table {name!r}: no rows to show")
    columns = list(dict.fromkeys(column for row in clips.values() for column in row))
    header = "".join(f"<th>{html.escape(str(column))}</th>" for column in columns)
    lines = []
    for row_label, row in clips.items():
        cells = []
        for column in columns:
            if column not in row:
                cells.append("<td></td>")
                continue
            value = row[column]
            if isinstance(value, str):
                cells.append(f"<td>{html.escape(value)}</td>")
            else:
                player = audio_player(value, sample_rate, f"{name}-{slug(row_label)}-{slug(column)}", seconds)
                cells.append(f"<td>{player}</td>")
        lines.append(f"<tr><th>{html.escape(str(row_label))}</th>{''.join(cells)}</tr>")
    caption_html = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return AudioTable(f"<table class='partsim-audio-table'>{caption_html}<tr><th></th>{header}</tr>"
                      f"{''.join(lines)}</table>")
