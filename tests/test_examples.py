"""The notebook in examples/ runs from top to bottom: it trains its own tiny run, so it
cannot rot while the API it shows changes."""

import os

import pytest
from helpers import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv("T5X_LITE_NOTEBOOK_WORKDIR", str(tmp_path / "runs"))
  monkeypatch.setenv("T5X_LITE_EXPERIMENTS", os.path.join(REPO, "experiments"))
  notebook = nbformat.read(os.path.join(REPO, "examples", "quickstart.ipynb"), as_version=4)
  # The kernel inherits this process's environment: the CPU platform and the test's TFDS dir.
  nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = {index: cell.outputs for index, cell in enumerate(notebook.cells)
             if cell.cell_type == "code"}
  text = "\n".join(str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
                   for cell_outputs in outputs.values() for output in cell_outputs)
  assert "validation loss" in text and "Model(" in text and "image/png" in str(outputs)
  assert (tmp_path / "runs" / "losses.png").stat().st_size > 10_000
  assert (tmp_path / "runs" / "finetune" / "checkpoints" / "10").is_dir()
