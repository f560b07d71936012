"""The inspection notebooks run top to bottom on a run directory."""

from pathlib import Path

import pytest

from tests.synthetic import make_run

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
# What each notebook prints once it has read its directory (a notebook not listed reads a run).
EXPECTED = {"eval.ipynb": "2 models; columns"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    from tests.evaluation.fakes import make_eval

    make_run(str(tmp_path / "run"))
    monkeypatch.setenv("FACTORY_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("FACTORY_EVAL_DIR", str(make_eval(tmp_path / "eval")))
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(EXPECTED.get(path.name, "pairs; columns") in o.get("text", "") for o in outputs)
