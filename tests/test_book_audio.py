"""The book's audio tables: OGG files at the given rate beside the page, referenced relatively, never inlined."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from partsim_core.book.audio import MEDIA_DIR_ENV, MEDIA_URL_ENV, audio_table, slug
from partsim_core.errors import PartsimError


@pytest.fixture
def media(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "page_media"
    monkeypatch.setenv(MEDIA_DIR_ENV, str(folder))
    monkeypatch.setenv(MEDIA_URL_ENV, "page_media")
    return folder


def _tone(rate: int, seconds: float, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def test_table_writes_ogg_files_at_the_given_rate(media: Path) -> None:
    rate = 22050
    table = audio_table({"mix": {"track A": _tone(rate, 7.0), "track B": _tone(rate, 2.0, 220.0)}},
                        sample_rate=rate, name="ch0-listen", seconds=5.0, caption="two tracks")
    sources = re.findall(r'<audio[^>]*src="([^"]+)"', table.html)
    assert sources == ["page_media/ch0-listen-mix-track-a.ogg", "page_media/ch0-listen-mix-track-b.ogg"]
    assert "base64" not in table.html and "<caption>two tracks</caption>" in table.html
    first = soundfile.info(str(media / "ch0-listen-mix-track-a.ogg"))
    assert (first.format, first.subtype, first.samplerate) == ("OGG", "VORBIS", rate)
    assert first.frames == 5 * rate  # cut to `seconds`
    assert soundfile.info(str(media / "ch0-listen-mix-track-b.ogg")).frames == 2 * rate  # shorter clips stay whole
    decoded, _ = soundfile.read(str(media / "ch0-listen-mix-track-a.ogg"))
    assert 0.2 < np.max(np.abs(decoded)) < 0.4  # the tone, not silence and not clipped
    assert table._repr_html_() == table.html


def test_silent_absent_and_text_cells(media: Path) -> None:
    table = audio_table({"bass": {"a": None, "b": np.zeros(800), "c": "segment 3 <best>"}}, sample_rate=8000,
                        name="x")
    assert "(no such part)" in table.html and "(silent)" in table.html
    assert "segment 3 &lt;best&gt;" in table.html  # text is escaped
    assert "<audio" not in table.html and not media.exists()


def test_rows_with_different_columns_leave_cells_empty(media: Path) -> None:
    table = audio_table({"mix": {"whole": _tone(8000, 1.0)}, "drums": {"ideal": _tone(8000, 1.0),
                                                                      "separated": _tone(8000, 1.0)}},
                        sample_rate=8000, name="t")
    header = re.search(r"<tr><th></th>(.*?)</tr>", table.html).group(1)
    assert re.findall(r"<th>([^<]*)</th>", header) == ["whole", "ideal", "separated"]
    assert table.html.count("<audio") == 3 and table.html.count("<td></td>") == 3


def test_without_a_runner_clips_go_to_a_relative_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEDIA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    table = audio_table({"mix": {"a": _tone(8000, 0.5)}}, sample_rate=8000, name="by-hand")
    assert 'src="partsim_media/by-hand-mix-a.ogg"' in table.html
    assert (tmp_path / "partsim_media" / "by-hand-mix-a.ogg").is_file()


def test_bad_input_is_a_partsim_error(media: Path) -> None:
    with pytest.raises(PartsimError, match="no rows"):
        audio_table({}, sample_rate=8000, name="empty")
    with pytest.raises(PartsimError, match="1-d"):
        audio_table({"mix": {"a": np.ones((2, 100))}}, sample_rate=8000, name="stereo")


def test_slug_makes_file_names() -> None:
    assert slug("Result 1: Track00042 (mix)") == "result-1-track00042-mix"
    assert slug("///") == "clip"
