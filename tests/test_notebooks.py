"""Every solution notebook runs at CI size under papermill and produces its files; student notebooks run up to
their first TODO; student notebooks are up to date with their solutions."""

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import NOTEBOOKS

from workshop_lib import teaching

# CI size: synthetic data (data_path is passed by the fixture), real ImageNet features from the bundled
# EfficientNet-Lite0, 64 px, two categories.
CI = {"backbone": "efficientnet_lite0", "weights": "imagenet", "image_size": 64, "resize": 64,
      "categories": ["washer", "tile"], "sampler_percentage": 0.1}
EXPECTED_FIGURES = {
    "00_setup_and_data": ["00_examples.png"],
    "01_fit_patchcore": ["01_examples.png"],
    "02_evaluate": [],
    "03_score_distribution": ["03_category_metrics.png", "03_score_distributions.png"],
    "04_predictions_and_thresholds": ["04_histograms.png", "04_thresholds.png"],
    "05_worst_category": ["05_worst_examples.png"],
    "06_best_category": ["06_best_examples.png"],
    "07_image_size_sweep": ["07_image_size.png"],
    "12_leaderboard": ["12_leaderboard.png"],
}
PARAMETERS = {name: dict(CI) for name in EXPECTED_FIGURES}
PARAMETERS["00_setup_and_data"] = {"image_size": 64}
PARAMETERS["07_image_size_sweep"]["image_sizes"] = [48, 64]
PARAMETERS["12_leaderboard"] = {"categories": ["washer"], "image_size": 64, "resize": 64, "workers": 2,
                                "overrides": {"rd4ad": {"epochs": 1}, "mmr": {"epochs": 1},
                                              "resad": {"epochs": 1, "coupling_layers": 2, "pos_embed_dim": 16},
                                              "mae-lora": {"architecture": "vit_micro", "epochs": 2,
                                                           "warmup_epochs": 1}}}


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    chunks = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            chunks.append(output.get("text", ""))
            chunks.append(json.dumps(output.get("data", {}).get("text/plain", "")))
    return "\n".join(chunks)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED_FIGURES))
def test_solution_notebook_runs_at_ci_size(run_notebook, name):
    notebook = run_notebook(name, **PARAMETERS[name])
    output_dir = Path(notebook.metadata["output_dir"])
    for figure in EXPECTED_FIGURES[name]:
        path = output_dir / "figures" / figure
        assert path.is_file() and path.stat().st_size > 5000, f"{name} did not save {figure}"
    text = outputs_text(notebook)
    assert "✗" not in text, f"{name}: a check failed:\n{text[-2000:]}"
    assert text.count("✓") >= {"02_evaluate": 1, "04_predictions_and_thresholds": 2, "05_worst_category": 2,
                                "06_best_category": 2}.get(name, 0)
    if name == "01_fit_patchcore":
        table = pd.read_csv(output_dir / "01_pretraining.csv", index_col="weights")
        assert table.loc["ImageNet", "instance_auroc"] > table.loc["random init", "instance_auroc"]
        assert (output_dir / "step1" / "0000" / "models" / "mvtec_washer" / "config.json").is_file()
    if name == "02_evaluate":
        results = pd.read_csv(output_dir / "evaluated" / "evaluated" / "group" / "results.csv", index_col="Row Names")
        assert list(results.index) == ["mvtec_washer", "mvtec_tile", "Mean"]
    if name == "12_leaderboard":
        board = pd.read_csv(output_dir / "12_leaderboard.csv")
        assert sorted(board["method"]) == ["mae-lora", "mmr", "patchcore", "rd4ad", "resad"]
    if name == "07_image_size_sweep":
        sweep = pd.read_csv(output_dir / "07_image_size_sweep.csv")
        assert sorted(sweep["image_size"].unique()) == [48, 64] and len(sweep) == 4


def first_todo_cell(notebook: nbformat.NotebookNode) -> int:
    """Index of the first code cell with a TODO (the cells before it must run as they are)."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and "# TODO" in cell.source:
            return index
    return len(notebook.cells)


def run_up_to_first_todo(name: str, tmp_path: Path, synthetic_root: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    student = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cut = first_todo_cell(student)
    student.cells = student.cells[:cut]
    for cell in student.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            overrides = {**PARAMETERS[name], "data_path": str(synthetic_root), "output_dir": str(tmp_path)}
            cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in overrides.items())
    NotebookClient(student, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS.parent / "work")}},
                   timeout=600).execute()
    return student


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in EXPECTED_FIGURES if n != "00_setup_and_data"])  # 00 has no TODO
def test_student_notebook_runs_up_to_first_todo(name, tmp_path, synthetic_root):
    student = run_up_to_first_todo(name, tmp_path, synthetic_root)
    assert student.cells, f"{name} has no cell before its first TODO"
    errors = [o for c in student.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_student_notebooks_are_up_to_date():
    assert teaching.outdated() == [], "run: python -m workshop_lib.teaching"
    solutions = teaching.solutions()
    assert [p.name for p in solutions] == sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_have_one_parameters_cell_and_no_outputs():
    for path in [*NOTEBOOKS.glob("*.ipynb"), *NOTEBOOKS.glob("solutions/*.ipynb")]:
        notebook = nbformat.read(path, as_version=4)
        tagged = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path} needs exactly one cell tagged 'parameters'"
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), f"{path} has outputs"
