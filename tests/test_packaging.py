"""Packaging checks: pyproject.toml and environment.yml describe the same environment; the CLI explains itself."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from partsim_core.cli import build_parser, main

# conda-forge spells a few packages differently from PyPI.
CONDA_TO_PYPI = {"pysoundfile": "soundfile", "pytorch": "torch"}
# Present only on the conda side, with the reason: the Python interpreter and pip themselves, and PyAudio, which
# tinysoundfont requires and conda-forge ships prebuilt (pip compiles it from source).
CONDA_ONLY = {"python", "pip", "pyaudio"}


def _name(requirement: str) -> str:
    name = re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-")


def _pyproject_packages(repo_root) -> set[str]:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {_name(r) for r in requirements}


def _environment_packages(repo_root) -> set[str]:
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    names = set()
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            names |= {_name(r) for r in entry.get("pip", []) if not r.startswith("-")}
        else:
            name = _name(entry)
            names.add(CONDA_TO_PYPI.get(name, name))
    return names - CONDA_ONLY


def test_environment_yml_matches_pyproject(repo_root):
    pyproject = _pyproject_packages(repo_root)
    conda = _environment_packages(repo_root)
    assert pyproject == conda, f"only in pyproject: {pyproject - conda}; only in environment.yml: {conda - pyproject}"


def test_torch_is_pinned_in_both(repo_root):
    assert '"torch==2.13.0"' in (repo_root / "pyproject.toml").read_text()
    assert "torch==2.13.0" in (repo_root / "environment.yml").read_text()


def _leaf_commands(parser, prefix=()):
    """Yield (words, parser) for every sub-command, walking argparse's sub-parser actions."""
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _leaf_commands(sub, (*prefix, name))


def test_every_command_has_help(capsys):
    commands = list(_leaf_commands(build_parser()))
    assert len(commands) >= 3
    for words, _ in commands:
        with pytest.raises(SystemExit) as stop:
            main([*words, "--help"])
        assert stop.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: partsim " + " ".join(words)), words


def test_unknown_preset_is_a_clear_error():
    from partsim_core.errors import PartsimError
    from partsim_core.presets import get_preset

    with pytest.raises(PartsimError, match="unknown preset 'huge'.*smoke"):
        get_preset("huge")
