"""Every notebook in ``notebooks/`` runs top to bottom, in a temporary copy (the stored file is untouched).

A cell that raises fails the test, so the notebooks' own assertions (e.g. exact vs the paper's values, Monte
Carlo within its error bars) are part of the suite. ``EPJAX_NOTEBOOK_REDUCED=1`` asks a notebook whose full runs
take long (``arrow_of_time``: many models trained) for its reduced setting; its stored outputs are the full runs.
"""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 1800  # per cell; the notebooks run in minutes on a CPU, more on a loaded one


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("EPJAX_NOTEBOOK_REDUCED", "1")  # the kernel inherits the environment
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(
        nb, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors
    nbformat.write(nb, copy)  # the executed copy, for inspection when a later assertion is added
