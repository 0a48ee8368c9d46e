"""The command line's persistent compilation cache: where it goes, that it can be turned off, and bad folders."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from epjax.cli import _cache, main

# One cheap command that compiles a few programs (exact EP and a Monte Carlo batch).
KALMAN = ["kalman", "--example", "scalar", "--steps", "3", "--samples", "64", "--batch-size", "64", "--no-progress"]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(_cache.ENV, raising=False)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_default_folder_is_in_the_user_cache_per_jax_version_and_cpu(clean_env):
    folder = _cache.resolve(None, False)
    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG_CACHE_HOME is the Linux convention")
    assert folder.parent == clean_env / "xdg" / "epjax"
    assert folder.name.startswith(f"jax-{jax.__version__}-")


def test_option_and_environment_choose_the_folder_or_turn_it_off(clean_env, monkeypatch):
    assert _cache.resolve(None, True) is None
    assert _cache.resolve(str(clean_env / "mine"), False) == clean_env / "mine"
    for off in ("off", "OFF", "0", "false", "no"):
        monkeypatch.setenv(_cache.ENV, off)
        assert _cache.resolve(None, False) is None
    monkeypatch.setenv(_cache.ENV, str(clean_env / "env"))
    assert _cache.resolve(None, False) == clean_env / "env"
    assert _cache.resolve(str(clean_env / "flag"), False) == clean_env / "flag"  # the flag wins
    assert _cache.resolve(None, True) is None
    monkeypatch.delenv(_cache.ENV)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(clean_env / "jax"))
    assert _cache.resolve(None, False) is None  # JAX's own setting stays in charge


def test_flags_are_exclusive(capsys):
    assert main(["--compile-cache", "x", "--no-compile-cache", "demo"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_folder_that_cannot_be_made_is_refused_by_name(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=r"--compile-cache must be a folder epjax can create and write"):
        _cache.enable(blocker / "cache", "--compile-cache")
    assert main(["--compile-cache", str(blocker / "cache"), *KALMAN]) == 2
    assert "--compile-cache must be a folder" in capsys.readouterr().err
    assert jax.config.jax_compilation_cache_dir is None  # nothing was switched on in this process


def _run(args, env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (_cache.ENV, "JAX_COMPILATION_CACHE_DIR")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PLATFORMS="cpu", **env_extra)
    code = (
        "import sys, jax; from epjax.cli import main; rc = main(sys.argv[1:]); "
        "print('CACHE_DIR', jax.config.jax_compilation_cache_dir); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.rsplit("CACHE_DIR ", 1)[1].strip()


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_on_by_default_in_the_user_cache_and_off_on_request(tmp_path):
    xdg = tmp_path / "xdg"
    used = _run(KALMAN, {}, tmp_path)  # default: on, under XDG_CACHE_HOME
    assert Path(used).parent == xdg / "epjax"
    assert len(_entries(Path(used))) > 0  # compiled programs were written
    before = {p: p.stat().st_mtime_ns for p in _entries(xdg)}

    assert _run(["--no-compile-cache", *KALMAN], {}, tmp_path) == "None"
    assert _run(KALMAN, {_cache.ENV: "off"}, tmp_path) == "None"
    assert {p: p.stat().st_mtime_ns for p in _entries(xdg)} == before  # nothing added or rewritten

    mine = tmp_path / "mine"
    assert _run(["--compile-cache", str(mine), *KALMAN], {}, tmp_path) == str(mine)
    assert len(_entries(mine)) > 0
