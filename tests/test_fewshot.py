import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_mvtec_category, write_image

from workshop_lib.cli import main
from workshop_lib.data import make_synthetic_aebad
from workshop_lib.models.base import AnomalyModel, ModelOutput
from workshop_lib.plotting import plot_fewshot_decay, save_figure
from workshop_lib.studies.fewshot import (
    DEFAULT_TIERS,
    MANIFEST,
    Study,
    add_domain_mean,
    collect,
    merge_tables,
    prepare_subset,
    run_study,
    shots_for,
    summarize,
    write_slurm_scripts,
)
from workshop_lib.studies.mmr_logs import parse_mmr_log, read_mmr_logs

FOLDER_SIZES = {"background": 40, "illumination": 7, "view": 3}


@pytest.fixture
def aebad_tree(tmp_path):
    """A tiny AeBAD-S tree: train folders of 40, 7 and 3 images, one test image with its mask."""
    base = tmp_path / "data" / "AeBAD_S"
    for folder, count in FOLDER_SIZES.items():
        for i in range(count):
            write_image(base / "train" / "good" / folder / f"{i:03d}.png", size=8, seed=i)
    write_image(base / "test" / "good" / "same" / "000.png", size=8)
    write_image(base / "ground_truth" / "groove" / "same" / "000.png", size=8)
    return base


def test_shots_follow_the_original_rule_with_at_least_one():
    assert shots_for(30, 10) == 3
    assert shots_for(10, 70) == 7  # exact: float arithmetic deletes ceil(3.0000000000000004) = 4
    assert shots_for(7, 55) == 3  # deletes ceil(0.45 * 7) = 4
    assert shots_for(3, 1) == 1 and shots_for(1, 5) == 1  # the at-least-one rule
    assert shots_for(521, 100) == 521


def test_subsets_are_deterministic_counted_per_folder_and_linked(aebad_tree, tmp_path):
    manifests = {}
    for tier in DEFAULT_TIERS:
        target = prepare_subset(aebad_tree, tmp_path / "a" / f"{tier}" / "AeBAD_S", tier, seed=7)
        manifest = json.loads((target / MANIFEST).read_text())
        assert manifest["shots"] == {f"good/{f}": shots_for(n, tier) for f, n in FOLDER_SIZES.items()}
        assert manifest["total_shots"] == sum(manifest["shots"].values())
        assert manifest["tier"] == tier and manifest["seed"] == 7 and "default_rng" in manifest["sampling"]
        for key, names in manifest["files"].items():
            links = sorted((target / "train" / key).iterdir())
            assert [p.name for p in links] == sorted(names) and len(names) == len(set(names))
            assert all(p.is_symlink() and p.resolve() == (aebad_tree / "train" / key / p.name).resolve()
                       for p in links)
        assert (target / "test").resolve() == aebad_tree.resolve() / "test"
        assert (target / "ground_truth").resolve() == aebad_tree.resolve() / "ground_truth"
        manifests[tier] = manifest
    assert manifests[1]["shots"] == {"good/background": 1, "good/illumination": 1, "good/view": 1}
    # Same (tier, seed) elsewhere: the same files; another seed: other files.
    again = prepare_subset(aebad_tree, tmp_path / "b" / "AeBAD_S", 25, seed=7)
    assert json.loads((again / MANIFEST).read_text())["files"] == manifests[25]["files"]
    other = prepare_subset(aebad_tree, tmp_path / "c" / "AeBAD_S", 25, seed=8)
    assert json.loads((other / MANIFEST).read_text())["files"] != manifests[25]["files"]
    # Idempotent: an identical subset is kept as it is; a different one in its place is refused.
    stamp = (again / MANIFEST).stat().st_mtime_ns
    assert prepare_subset(aebad_tree, again, 25, seed=7) == again
    assert (again / MANIFEST).stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="holds another subset"):
        prepare_subset(aebad_tree, again, 35, seed=7)


def test_mvtec_layout_samples_its_single_train_folder(tmp_path):
    root = make_mvtec_category(tmp_path / "data")
    target = prepare_subset(root / "thing", tmp_path / "subset" / "thing", 50, seed=0)
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["shots"] == {"good": 1} and len(list((target / "train" / "good").iterdir())) == 1


MMR_LOG = """\
[05/02 10:11:12][INFO] main.py:   27: path_to_config is /scratch/configs/5_percent_12345_seed/AeBAD_S/MMR.yaml
[05/02 10:11:13][INFO] train.py:   55: current individual_dataloader is aebad_S_AeBAD_S.
[05/02 10:11:13][INFO] train.py:   56: the data in current individual_dataloader aebad_S_AeBAD_S are 25.
[05/02 10:20:00][INFO] train.py:   78: epoch [200/200], loss:0.1234
[05/02 10:21:00][INFO] train.py:  104: current domain shift mode is same!
[05/02 10:21:30][INFO] train.py:  134: aebad_S_AeBAD_S's Image_Level AUROC is 85.600000.%
[05/02 10:21:30][INFO] train.py:  137: aebad_S_AeBAD_S's Full_Pixel_Level AUROC is 93.254206.%
[05/02 10:21:30][INFO] train.py:  141: aebad_S_AeBAD_S's per-region-overlap (PRO) AUROC is 89.800000.%
[05/02 10:22:00][INFO] train.py:  104: current domain shift mode is view!
[05/02 10:22:30][INFO] train.py:  134: aebad_S_AeBAD_S's Image_Level AUROC is 79.100000.%
[05/02 10:22:30][INFO] train.py:  137: aebad_S_AeBAD_S's Full_Pixel_Level AUROC is 88.000001.%
[05/02 10:22:30][INFO] train.py:  141: aebad_S_AeBAD_S's per-region-overlap (PRO) AUROC is 87.500000.%
[05/02 10:22:31][INFO] train.py:  147: Mean AUROC is 82.350000.%
[05/02 10:22:31][INFO] train.py:  147: Mean Pixel-AUROC is 90.627104.%
[05/02 10:22:31][INFO] train.py:  147: Mean per-region-overlap (PRO) is 88.650000.%
"""


def test_mmr_log_parser_reads_the_original_format(tmp_path):
    rows = parse_mmr_log(MMR_LOG)
    assert [(r["domain"], r["tier"], r["seed"], r["shots"], r["category"]) for r in rows] == [
        ("same", 5.0, 12345, 25, "aebad_S_AeBAD_S"), ("view", 5.0, 12345, 25, "aebad_S_AeBAD_S")]
    assert rows[0]["instance_auroc"] == pytest.approx(0.856)
    assert rows[0]["full_pixel_auroc"] == pytest.approx(0.93254206)
    assert rows[1]["full_pro"] == pytest.approx(0.875) and rows[0]["method"] == "MMR"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "DATASET_aebad_S_METHOD_MMR_RNG_SEED_12345_TIME_2024_05_02_10_11.log").write_text(MMR_LOG)
    table = read_mmr_logs(tmp_path / "logs")
    assert len(table) == 2 and np.isnan(table["fit_seconds"]).all()
    mean = add_domain_mean(table).query("domain == 'mean'")
    assert mean["instance_auroc"].item() == pytest.approx(0.8235)


class StubModel(AnomalyModel):
    """A model with no method name (so not registered): scores are the images' mean brightness."""

    fits: list[int] = []

    def __init__(self, seed: int = 0, fail: bool = False) -> None:
        self.seed = seed
        self.fail = fail

    def fit(self, dataset) -> "StubModel":
        if self.fail:
            raise RuntimeError("interrupted")
        StubModel.fits.append(self.seed)
        self.mean_ = float(np.mean([dataset[i]["image"].mean() for i in range(len(dataset))]))
        return self

    def predict(self, images: torch.Tensor) -> ModelOutput:
        maps = (images.mean(1) - self.mean_).abs().numpy().astype(np.float32)
        return ModelOutput(maps.reshape(len(maps), -1).max(1), maps)


@pytest.fixture(scope="module")
def synthetic_aebad(tmp_path_factory):
    return make_synthetic_aebad(tmp_path_factory.mktemp("aebad") / "data", categories=("washer",), n_train=6,
                                n_test_good=1, n_test_defect=1, image_size=64)


def make_study(folder, data, **options) -> Study:
    settings = {"layout": "aebad_s", "method": "stub", "tiers": [50, 100], "seeds": [0, 1], "resize": 64,
                "imagesize": 64, **options}
    return Study(folder, data, ["washer"], **settings)


def test_study_rows_and_resume_without_rerunning(synthetic_aebad, tmp_path):
    study = make_study(tmp_path / "study", synthetic_aebad)
    StubModel.fits.clear()
    attempts = []

    def interrupted_after_two(seed):  # the third run fails, as a killed job would
        attempts.append(seed)
        return StubModel(seed, fail=len(attempts) == 3)

    with pytest.raises(RuntimeError, match="interrupted"):
        run_study(study, make_model=interrupted_after_two)
    assert len(StubModel.fits) == 2 and len(study.pending()) == 2
    finished = {p: p.stat().st_mtime_ns for p in (study.folder / "results").rglob("*.json")}
    table = run_study(study, make_model=StubModel)
    assert len(StubModel.fits) == 4  # only the two unfinished runs were fitted
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert run_study(study, make_model=StubModel).equals(table) and len(StubModel.fits) == 4
    assert list(table.columns) == ["method", "category", "tier", "seed", "shots", "domain", "instance_auroc",
                                   "full_pixel_auroc", "full_pro", "fit_seconds"]
    assert len(table) == 4 * 4  # 2 tiers x 2 seeds x 4 domains
    assert set(table["domain"]) == {"same", "background", "illumination", "view"}
    assert dict(table.groupby("tier")["shots"].first()) == {50: 3, 100: 6}  # 1 of 2 per domain at 50 %
    assert table["instance_auroc"].between(0, 1).all() and (table["method"] == "stub").all()
    merged = merge_tables(table, read_mmr_logs_from_text(tmp_path))
    assert set(merged["method"]) == {"stub", "MMR"} and len(merged) == len(table) + 2
    summary = summarize(add_domain_mean(table))
    assert set(summary["seeds"]) == {2} and "mean" in set(summary["domain"])
    fig = plot_fewshot_decay(merged)
    assert sorted(ax.get_title() for ax in fig.axes if ax.get_title()) == sorted(set(merged["domain"]))
    assert save_figure(fig, tmp_path / "decay.png").stat().st_size > 0


def read_mmr_logs_from_text(tmp_path) -> pd.DataFrame:
    (tmp_path / "mmr.log").write_text(MMR_LOG)
    return read_mmr_logs(tmp_path / "mmr.log")


def test_study_config_is_fixed_per_folder(synthetic_aebad, tmp_path):
    make_study(tmp_path / "study", synthetic_aebad).save()
    assert Study.load(tmp_path / "study") == make_study(tmp_path / "study", synthetic_aebad)
    with pytest.raises(FileExistsError, match="another study"):
        make_study(tmp_path / "study", synthetic_aebad, seeds=[3]).save()


def named_runs(script: str) -> list[str]:
    loop = script[script.index("for RUN in"):script.index("; do")]
    return [line.strip(" \\'") for line in loop.splitlines()[1:] if line.strip(" \\")]


def test_slurm_scripts_are_valid_bash_and_name_every_run_once(synthetic_aebad, tmp_path):
    study = make_study(tmp_path / "study", synthetic_aebad, tiers=list(DEFAULT_TIERS), seeds=[0, 1, 2, 3, 4])
    runs = list(study.specs())
    assert len(runs) == 60 == len(set(runs))
    runs_file, array = write_slurm_scripts(study, sbatch_options=["--gres=gpu:1"])
    assert runs_file.read_text().splitlines() == runs
    text = array.read_text()
    assert "#SBATCH --array=0-59\n" in text and "#SBATCH --gres=gpu:1\n" in text
    assert "run-one" in text and "SLURM_ARRAY_TASK_ID" in text
    _, half1, half2 = write_slurm_scripts(study, halves=True)
    first, second = named_runs(half1.read_text()), named_runs(half2.read_text())
    assert first + second == runs and len(first) == len(second) == 30
    for script in (array, half1, half2):
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_command_line_prepare_slurm_collect(synthetic_aebad, tmp_path, capsys):
    folder = tmp_path / "study"
    subsets = main(["fewshot", "prepare", str(folder), "--data_root", str(synthetic_aebad), "-d", "washer", "--layout",
                    "aebad_s", "--model_kwargs", '{"backbone": "resnet18", "weights": null}', "--tiers", "10",
                    "50", "--seeds", "0", "--resize", "64", "--imagesize", "64"])
    assert [p.parent.name for p in subsets] == ["10_percent_0_seed", "50_percent_0_seed"]
    study = Study.load(folder)
    assert study.tiers == [10, 50] and study.model_kwargs == {"backbone": "resnet18", "weights": None}
    scripts = main(["fewshot", "slurm", str(folder), "--halves"])
    assert [p.name for p in scripts] == ["runs.txt", "fewshot_half1.sh", "fewshot_half2.sh"]
    (tmp_path / "mmr.log").write_text(MMR_LOG)
    table = main(["fewshot", "collect", str(folder), "--mmr_logs", str(tmp_path / "mmr.log"), "--output",
                  str(tmp_path / "all.csv")])
    assert len(table) == 2 and len(pd.read_csv(tmp_path / "all.csv")) == 2
    assert "mean" in capsys.readouterr().out
    assert collect(folder).empty


@pytest.mark.slow
def test_patchcore_study_in_two_local_processes(synthetic_aebad, tmp_path):
    tiny = {"backbone": "resnet18", "weights": None, "pretrain_embed_dimension": 64, "target_embed_dimension": 32}
    study = make_study(tmp_path / "study", synthetic_aebad, method="patchcore", model_kwargs=tiny, tiers=[50])
    table = run_study(study, workers=2)
    assert len(table) == 2 * 4 and set(table["seed"]) == {0, 1} and (table["method"] == "patchcore").all()
    assert all((study.folder / "logs" / f"{run}.log").is_file() for run in study.specs())
    assert study.pending() == []
