"""JAX's persistent compilation cache for the command line (on by default; never set by the library itself).

A command's first run spends most of its time compiling XLA programs; JAX can keep the compiled programs on
disk and reuse them in the next process (``jax_compilation_cache_dir``). The command line owns its process, so
it turns the cache on before anything compiles; ``import epjax`` never does (a user's process-wide JAX
configuration is theirs).

Where the cache lives, first match wins:

1. ``--no-compile-cache`` (off) or ``--compile-cache DIR``;
2. the environment variable ``EPJAX_COMPILE_CACHE``: ``off`` (also ``0``, ``false``, ``no``) or a folder;
3. ``JAX_COMPILATION_CACHE_DIR`` when the user set it (JAX has read it already: left as it is);
4. the user cache folder: ``$XDG_CACHE_HOME/epjax`` or ``~/.cache/epjax`` (``%LOCALAPPDATA%/epjax`` on
   Windows, ``~/Library/Caches/epjax`` on macOS), in a subfolder per jax version and CPU instruction set.

The per-CPU subfolder matters on shared home folders: programs compiled for one machine's vector extensions
(AVX-512, say) must not be loaded on a machine without them.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

import jax

ENV = "EPJAX_COMPILE_CACHE"
OFF = ("off", "0", "false", "no")
# Cache every program that took at least this long to compile: JAX's default (1 s) skips the many sub-second
# programs a command compiles, which together are most of a cold start.
MIN_COMPILE_SECONDS = 0.0


def _user_cache_root() -> Path:
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _cpu_signature() -> str:
    """A short hash of the CPU model and its instruction-set flags (empty flags where the OS does not say)."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    text += line
                if line.strip() == "":  # the first processor's block is enough
                    break
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_dir() -> Path:
    """The default cache folder: the user cache folder / ``epjax`` / ``jax-<version>-<cpu>``."""
    return _user_cache_root() / "epjax" / f"jax-{jax.__version__}-{_cpu_signature()}"


def resolve(option: str | None, disabled: bool) -> Path | None:
    """The cache folder the command line should use, or ``None`` for no cache (see the module docstring).

    Args:
        option: the ``--compile-cache`` value, or ``None`` when not given.
        disabled: ``--no-compile-cache`` was given.

    Returns:
        The folder, or ``None`` when the cache is off or JAX's own ``JAX_COMPILATION_CACHE_DIR`` is in charge.
    """
    if disabled:
        return None
    if option is not None:
        return Path(option).expanduser()
    env = os.environ.get(ENV, "").strip()
    if env.lower() in OFF:
        return None
    if env:
        return Path(env).expanduser()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    return default_dir()


def enable(folder: Path, option: str) -> None:
    """Point JAX's persistent compilation cache at ``folder`` (created if missing).

    Raises:
        ValueError: when ``folder`` cannot be created or written, naming ``option``.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{option} must be a folder epjax can create and write; {folder}: {err.strerror}.") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"{option} must be a writable folder, got {folder}.")
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
