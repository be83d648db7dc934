"""``partsim mixquery index`` / ``query``, in-process through ``partsim_core.cli.main``, on a tiny synthetic catalog
with a tiny untrained CSN injected in place of the trained one."""

from __future__ import annotations

import json
import re

import pytest
from test_mixquery_index import CATALOG_SONGS, make_catalog, tiny_backend

from partsim_core.cli import build_parser, main
from partsim_core.cli.mixquery import index_catalog
from partsim_core.errors import PartsimError
from partsim_core.mixquery import MixQueryIndex, StemQuery


@pytest.fixture()
def catalog_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    return make_catalog(tmp_path / "catalog", CATALOG_SONGS)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.strip().splitlines() if line.strip()]


@pytest.mark.parametrize("words", [["mixquery"], ["mixquery", "index"], ["mixquery", "query"], ["mixquery", "run"],
                                   ["train", "mixquery-head"]])
def test_help(capsys, words):
    with pytest.raises(SystemExit) as stop:
        main([*words, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: partsim " + " ".join(words))


def test_index_with_an_injected_backend_then_query(capsys, catalog_root, tmp_path):
    out = tmp_path / "index"
    args = build_parser().parse_args(["mixquery", "index", "--catalog", str(catalog_root), "--out-dir", str(out),
                                      "--preset", "smoke", "--no-progress"])
    with pytest.warns(UserWarning, match="Track00003"):
        summary = index_catalog(args, backend=tiny_backend())
    assert summary["index"] == str(out) and summary["songs"] == 3 and summary["segments"] == 6
    assert summary["backend"] == "csn" and summary["model_hash"] == "tiny-csn-0"
    assert summary["skipped"] == ["Track00003"] and summary["reused"] is False
    assert summary["parts"] == ["drums", "bass", "piano", "guitar", "others"]
    index = MixQueryIndex.load(out)

    code = main(["mixquery", "query", "--index", str(out), "--stem", "Track00001:drums:1",
                 "--stem", "Track00004:piano:0", "--k", "2"])
    assert code == 0
    lines = json_lines(capsys.readouterr().out)
    expected = index.search_songs([StemQuery("Track00001", "drums", 1), StemQuery("Track00004", "piano", 0)], k=2)
    assert [line["rank"] for line in lines] == [1, 2]
    assert [(line["song"], line["best_segment"]) for line in lines] == [(h.song, h.best_segment) for h in expected]
    assert [line["distance"] for line in lines] == pytest.approx([hit.distance for hit in expected])
    start = {line["song"]: line["start_s"] for line in lines}
    assert all(start[hit.song] == 10.0 * hit.best_segment for hit in expected)

    code = main(["mixquery", "query", "--index", str(out), "--stem", "Track00002:drums:2", "--similar",
                 "--k", "10"])
    assert code == 0
    lines = json_lines(capsys.readouterr().out)
    expected = index.similar_stems(StemQuery("Track00002", "drums", 2), k=10)
    assert len(lines) == 3  # the segments of the two other songs
    assert [(line["song"], line["segment"]) for line in lines] == [(hit.song, hit.segment) for hit in expected]
    assert {line["part"] for line in lines} == {"drums"}

    code = main(["mixquery", "query", "--index", str(out), "--stem", "Track00001:drums:0",
                 "--exclude-query-songs", "--k", "5"])
    assert code == 0
    assert "Track00001" not in {line["song"] for line in json_lines(capsys.readouterr().out)}


def test_full_cli_index_with_the_registry_patched(capsys, catalog_root, tmp_path, monkeypatch):
    calls = []

    hashes = iter(["tiny-csn-0", "tiny-csn-0", "retrained", "retrained"])

    def fake_get_backend(name, data, **options):
        calls.append((name, data, options["device"]))
        backend = tiny_backend()
        backend.model_hash = next(hashes)
        return backend

    monkeypatch.setattr("partsim_core.cli.mixquery.get_backend", fake_get_backend)
    monkeypatch.setattr("partsim_core.cli.mixquery.load_dataset", lambda preset, root, progress: f"handle-{preset}")
    out = tmp_path / "index"
    base = ["mixquery", "index", "--catalog", str(catalog_root), "--out-dir", str(out), "--preset", "smoke",
            "--device", "cpu", "--no-progress"]
    with pytest.warns(UserWarning):
        assert main(base) == 0
    first = json_lines(capsys.readouterr().out)
    assert len(first) == 1 and first[0]["segments"] == 6 and not first[0]["reused"]
    assert calls == [("csn", "handle-smoke", "cpu")]
    assert (out / ".partsim-output").is_file()  # written through the output rule
    assert main(base) == 0  # opens and verifies: reused
    assert json_lines(capsys.readouterr().out)[0]["reused"] is True
    # A retrained model: the index no longer verifies for it, so it is rebuilt in place (partsim wrote it).
    with pytest.warns(UserWarning):
        assert main(base) == 0
    rebuilt = json_lines(capsys.readouterr().out)[0]
    assert rebuilt["reused"] is False and rebuilt["model_hash"] == "retrained"
    assert main(base) == 0
    assert json_lines(capsys.readouterr().out)[0]["reused"] is True


def test_index_output_rule(capsys, catalog_root, tmp_path):
    # Never inside (or equal to) the catalogue; never over a folder partsim did not write.
    for inside in (catalog_root, catalog_root / "test" / "index"):
        code = main(["mixquery", "index", "--catalog", str(catalog_root), "--out-dir", str(inside), "--preset",
                     "smoke", "--no-progress"])
        assert code == 2 and re.search(r"(is|inside) the input", capsys.readouterr().err)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    args = build_parser().parse_args(["mixquery", "index", "--catalog", str(catalog_root), "--out-dir", str(foreign),
                                      "--preset", "smoke", "--no-progress", "--fresh"])
    with pytest.raises(PartsimError, match="partsim did not write"):
        index_catalog(args, backend=tiny_backend())
    assert (foreign / "notes.txt").read_text() == "mine"
    assert build_parser().parse_args(["mixquery", "index", "--fresh"]).fresh is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["mixquery", "index", "--rebuild"])


def test_errors_are_one_line_exit_2(capsys, catalog_root, tmp_path):
    code = main(["mixquery", "index", "--catalog", str(tmp_path / "missing"), "--preset", "smoke",
                 "--out-dir", str(tmp_path / "x"), "--no-progress"])
    assert code == 2 and "Slakh root not found" in capsys.readouterr().err
    code = main(["mixquery", "index", "--catalog", str(catalog_root), "--backend", "mert", "--preset", "smoke",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "mert" in err and ("transformers" in err or "MERT model folder" in err)
    assert not (tmp_path / "cache" / "models").exists()  # refused before any training
    code = main(["mixquery", "query", "--index", str(tmp_path / "none"), "--stem", "a:drums:0"])
    assert code == 2 and "no MixQuery index here" in capsys.readouterr().err
    code = main(["mixquery", "query", "--index", str(tmp_path / "none"), "--stem", "Track00001-drums"])
    assert code == 2 and "expected SONG:PART:SEGMENT" in capsys.readouterr().err
    code = main(["mixquery", "query", "--index", str(tmp_path / "none"), "--stem", "Track00001:drums:x"])
    assert code == 2 and "is not an integer" in capsys.readouterr().err


@pytest.mark.slow
def test_default_backend_end_to_end_on_the_smoke_dataset(capsys, tmp_path, monkeypatch):
    # The real registry: condition (i)'s CSN of the smoke preset, trained in a private cache, on the smoke dataset's
    # test split; the index goes to tmp_path.
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "index"
    assert main(["mixquery", "index", "--preset", "smoke", "--out-dir", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    summary = json_lines(capsys.readouterr().out)[-1]
    assert summary["backend"] == "csn" and summary["model_hash"].startswith("csn-i-")
    assert summary["split"] == "test" and summary["songs"] >= 1 and summary["segments"] >= summary["songs"]
    index = MixQueryIndex.load(out, backend="csn", model_hash=summary["model_hash"])
    song = index.songs[0]
    part = next(part for part in index.parts if index.has_part_audio(song, part))
    hits = index.search_songs([StemQuery(song, part, 0)], k=len(index.songs))
    assert sorted(hit.song for hit in hits) == sorted(index.songs)
    by_song = {hit.song: hit for hit in hits}
    assert by_song[song].distance == pytest.approx(0.0, abs=1e-5) and by_song[song].best_segment == 0
    assert [hit.distance for hit in hits] == sorted(hit.distance for hit in hits)
    assert index.segment_audio(song, "mix", 0).shape == (int(10 * index.sample_rate),)
