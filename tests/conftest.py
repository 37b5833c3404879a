"""Shared fixtures: one synthetic dataset per test run, offline hub, small sizes."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing hub file fails fast instead of hanging
os.environ.setdefault("TQDM_DISABLE", "1")

from workshop_lib.data import make_synthetic_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# CI size: small images, few of them. Every test and notebook run reads this one dataset.
SYNTHETIC = {"n_train": 30, "n_test_good": 10, "n_test_defect": 5, "image_size": 128, "seed": 0}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """The synthetic MVTec-layout dataset, made once per run (reused across runs via WORKSHOP_TEST_DATA)."""
    shared = os.environ.get("WORKSHOP_TEST_DATA")
    root = Path(shared) if shared else tmp_path_factory.mktemp("data") / "synthetic"
    return make_synthetic_dataset(root, **SYNTHETIC)


NOTEBOOKS = REPO / "notebooks"


def pytest_terminal_summary(terminalreporter):
    """Print the whole notebook suite's time at CI size (issue 4 asks for it in every run)."""
    reports = [r for r in terminalreporter.getreports("passed") + terminalreporter.getreports("failed")
               if "test_notebooks.py" in r.nodeid and r.when == "call"]
    if reports:
        total = sum(r.duration for r in reports)
        terminalreporter.write_line(f"notebooks at CI size: {len(reports)} runs, {total:.0f} s in all")


@pytest.fixture(scope="session")
def run_notebook(tmp_path_factory, synthetic_root):
    """Execute ``notebooks/solutions/<name>.ipynb`` with papermill at CI size; returns the executed notebook.

    ``parameters`` override the notebook's ``parameters`` cell; ``data_path`` (the shared synthetic dataset)
    and ``output_dir`` (a fresh temp folder) are always passed.
    """
    import nbformat
    import papermill

    def run(name: str, folder: str = "solutions", **parameters) -> nbformat.NotebookNode:
        output_dir = tmp_path_factory.mktemp(name)
        params = {"data_path": str(synthetic_root), "output_dir": str(output_dir), **parameters}
        executed = output_dir / f"{name}.executed.ipynb"
        papermill.execute_notebook(
            str(NOTEBOOKS / folder / f"{name}.ipynb"), str(executed), parameters=params,
            cwd=str(REPO / "work"), kernel_name="python3", progress_bar=False,
        )
        notebook = nbformat.read(executed, as_version=4)
        notebook.metadata["output_dir"] = str(output_dir)
        return notebook

    return run
