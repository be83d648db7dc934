"""Self-verifying artefacts (partsim_core.data.artefacts)."""

import numpy as np
import pytest

from partsim_core.data import artefacts


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))


def test_compute_once_then_reuse_and_key_includes_audio():
    calls = []

    def compute(folder):
        calls.append(folder)
        np.save(folder / "x.npy", np.arange(5))

    first = artefacts.cached_artefact("demo", {"a": 1}, "audio-1", compute)
    again = artefacts.cached_artefact("demo", {"a": 1}, "audio-1", compute)
    other_audio = artefacts.cached_artefact("demo", {"a": 1}, "audio-2", compute)
    assert first == again and other_audio != first
    assert len(calls) == 2
    assert (first / artefacts.MANIFEST).is_file()


def test_a_flipped_byte_is_detected_and_recomputed():
    def compute(folder):
        np.save(folder / "x.npy", np.arange(100, dtype=np.float32))

    folder = artefacts.cached_artefact("demo", {}, "audio", compute)
    path = folder / "x.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    import os
    os.utime(path, ns=(1, 1))  # a new mtime invalidates the per-process memo, as a real write would
    assert "checksum" in artefacts.verify_manifest(folder)
    rebuilt = artefacts.cached_artefact("demo", {}, "audio", compute)
    assert artefacts.verify_manifest(rebuilt) is None
    assert np.array_equal(np.load(rebuilt / "x.npy"), np.arange(100, dtype=np.float32))


def test_missing_and_extra_files_are_reported(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "one").write_text("1")
    artefacts.write_manifest(folder, {})
    (folder / "two").write_text("2")
    assert "does not list" in artefacts.verify_manifest(folder)
    (folder / "two").unlink()
    (folder / "one").unlink()
    assert "missing" in artefacts.verify_manifest(folder)


def test_no_fingerprint_is_refused():
    with pytest.raises(Exception, match="fingerprint"):
        artefacts.artefact_dir("demo", {}, "")
