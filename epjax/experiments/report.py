"""What every experiment returns: a typed result that renders itself, and the provenance of the run.

An experiment (a function in :mod:`epjax.experiments`) returns a :class:`Result`. A result knows how to show
itself — a terminal table (:meth:`Result.table`), a JSON-ready dictionary (:meth:`Result.to_json`), CSV rows
(:meth:`Result.csv_header`, :meth:`Result.csv_rows`) and a figure (:meth:`Result.plot`) — so the command line,
a notebook and a benchmark all render the same object the same way. :class:`Provenance` records how a file
was made: the command line, the versions of epjax, JAX and jaxlib, the device, the seed and the SHA-256 of every
model and input file read (:attr:`Result.inputs`).

Errors that a caller may want to act on cross layers as exceptions with fields (:class:`ExperimentError` and
its subclasses in each experiment module), never as strings to be parsed.

>>> class Squares(Result):
...     title = "squares"
...     def __init__(self, n):
...         self.n = n
...     def rows(self):
...         return ["k", "k^2"], [[str(k), str(k * k)] for k in range(1, self.n + 1)]
...     def to_json(self):
...         return {"squares": [k * k for k in range(1, self.n + 1)]}
>>> print(Squares(2).table())
  k  k^2
  -  ---
  1    1
  2    4
>>> Squares(3).to_json()
{'squares': [1, 4, 9]}
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike


class ExperimentError(ValueError):
    """An experiment refused its input. Subclasses carry the offending item in fields (not only in the text)."""


def sha256_file(path: PathLike, *, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in chunks (hex digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _device() -> str:
    import jax

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    if jax.default_backend() == "cpu":
        kinds = [_cpu_model()]
    return f"{jax.default_backend()}: {', '.join(kinds)} ({len(devices)} device{'s' if len(devices) > 1 else ''})"


def _cpu_model() -> str:
    """The processor's model name and core count (``/proc/cpuinfo`` where it exists)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _versions() -> dict[str, str]:
    import jax
    import jaxlib
    import numpy as np

    import epjax

    return {
        "epjax": epjax.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@dataclasses.dataclass(frozen=True)
class Provenance:
    """How a result file was made.

    Attributes:
        command: the command line (``argv``, program name first), or ``None`` for a library call.
        versions: epjax, jax, jaxlib, numpy and Python versions.
        device: the JAX backend and device kinds.
        seed: the run's random seed, ``None`` when it has none.
        inputs: ``{path: SHA-256}`` of every model and input file read.
        created: UTC time of the run (ISO 8601).
    """

    command: tuple[str, ...] | None
    versions: Mapping[str, str]
    device: str
    seed: int | None
    inputs: Mapping[str, str]
    created: str

    @classmethod
    def collect(
        cls, *, seed: int | None = None, inputs: Iterable[PathLike] = (), command: Sequence[str] | None = None
    ) -> Provenance:
        """The provenance of a run happening now on this machine (hashes every file in ``inputs``)."""
        hashed = {os.fspath(p): sha256_file(p) for p in dict.fromkeys(inputs) if os.path.isfile(p)}
        return cls(
            command=None if command is None else tuple(str(c) for c in command),
            versions=_versions(),
            device=_device(),
            seed=seed,
            inputs=hashed,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {
            "command": None if self.command is None else list(self.command),
            "versions": dict(self.versions),
            "device": self.device,
            "seed": self.seed,
            "inputs": [{"path": p, "sha256": h} for p, h in self.inputs.items()],
            "created": self.created,
        }

    def lines(self) -> list[str]:
        """The provenance as short ``key: value`` lines (figure metadata, text headers)."""
        out = []
        if self.command is not None:
            out.append("command: " + " ".join(self.command))
        out.append("versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        out.append(f"device: {self.device}")
        if self.seed is not None:
            out.append(f"seed: {self.seed}")
        out.extend(f"input: {p} sha256 {h}" for p, h in self.inputs.items())
        out.append(f"created: {self.created}")
        return out


def json_number(x: Any) -> float | None:
    """``None`` for missing or non-finite values (strict JSON), else a float."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def json_header(command: str, units: str | None = None, **settings: Any) -> dict[str, Any]:
    """The first keys of every result's JSON: the command, the epjax and JAX versions, the units and settings.

    >>> import epjax, jax
    >>> header = json_header("ep", "nats", seed=0)
    >>> list(header), header["epjax_version"] == epjax.__version__, header["jax_version"] == jax.__version__
    (['command', 'epjax_version', 'jax_version', 'units', 'seed'], True, True)
    >>> list(json_header("sample-lm"))
    ['command', 'epjax_version', 'jax_version']
    """
    import jax

    import epjax

    header: dict[str, Any] = {"command": command, "epjax_version": epjax.__version__, "jax_version": jax.__version__}
    if units is not None:
        header["units"] = units
    return header | settings


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """A plain-text table: right-aligned columns separated by two spaces, a rule under the header."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).rjust(width) for cell, width in zip(line, widths, strict=True)) for line in [headers, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(indent + line for line in lines)


class Result:
    """Base class of experiment results: override what the result can show.

    - :meth:`rows` -> ``(headers, cells)``: the main table, cells already formatted as strings.
    - :meth:`table` -> the terminal text (default: the :meth:`rows` table); override to add headings or verdicts.
    - :meth:`to_json` -> a JSON-ready dict (strict: non-finite numbers as ``None``).
    - :meth:`csv_header` and :meth:`csv_rows`: one CSV row per record, numbers unformatted.
    - :meth:`plot` draws into a path (the extension sets the format) or into matplotlib axes.
    - :attr:`inputs`: the files the experiment read (hashed into the provenance); :attr:`seed`.
    """

    title: str = ""
    inputs: tuple[PathLike, ...] = ()
    seed: int | None = None
    #: whether the result passed the checks it ran (a command exits 1 when ``False``); ``None``: no check
    passed: bool | None = None

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """The main table: column titles and rows of formatted cells."""
        raise NotImplementedError(f"{type(self).__name__} has no table.")

    def table(self) -> str:
        """The terminal text (default: the :meth:`rows` table)."""
        headers, cells = self.rows()
        return format_table(headers, cells)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary (non-finite numbers as ``None``)."""
        raise NotImplementedError(f"{type(self).__name__} has no JSON form.")

    def csv_header(self) -> Sequence[str]:
        """The CSV column names."""
        raise NotImplementedError(f"{type(self).__name__} has no CSV form.")

    def csv_rows(self) -> Iterable[Sequence[Any]]:
        """One CSV row per record (numbers unformatted)."""
        raise NotImplementedError(f"{type(self).__name__} has no CSV form.")

    def plot(self, path_or_axes: Any = None) -> Any:
        """Draw the result's figure. Subclasses implement :meth:`draw`; this handles paths and axes.

        Args:
            path_or_axes: a file path (``.png``, ``.pdf`` or ``.svg``), matplotlib axes, or ``None`` for a new
                figure.

        Returns:
            The matplotlib ``Figure``.
        """
        from matplotlib.axes import Axes
        from matplotlib.figure import Figure

        if isinstance(path_or_axes, Axes):
            self.draw(path_or_axes.figure, [path_or_axes])
            return path_or_axes.figure
        fig = Figure(layout="constrained")
        self.draw(fig, None)
        if path_or_axes is not None:
            save_figure(fig, path_or_axes)
        return fig

    def draw(self, fig: Any, axes: Sequence[Any] | None) -> None:
        """Draw into ``fig`` (creating subplots when ``axes`` is ``None``, else into the given axes)."""
        raise NotImplementedError(f"{type(self).__name__} has no figure.")


def save_figure(fig: Any, path: PathLike, provenance: Provenance | None = None) -> None:
    """Save a matplotlib figure (the extension sets the format), with the provenance in its metadata."""
    suffix = Path(path).suffix.lower()
    metadata = None
    if provenance is not None:
        text = "\n".join(provenance.lines())
        key = {".png": "Description", ".pdf": "Subject", ".svg": "Description"}.get(suffix)
        metadata = {key: text} if key else None
    try:
        fig.savefig(path, dpi=150, metadata=metadata)
    except OSError as exc:
        raise ValueError(f"{os.fspath(path)}: cannot write the figure ({exc.strerror or exc}).") from None


def program_argv() -> list[str]:
    """The current process's command line, program name first (``epjax`` for the console script)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("__main__.py", "epjax"):
        argv[0] = "epjax"
    return argv


__all__ = [
    "ExperimentError",
    "Provenance",
    "Result",
    "format_table",
    "json_header",
    "json_number",
    "program_argv",
    "save_figure",
    "sha256_file",
]
