"""Presets in one table, read by the CLI and the leaderboard; the leaderboard resumes, writes Slurm arrays and
merges its tasks."""

import inspect
import json

import pandas as pd
import pytest

from workshop_lib.cli import build_parser, main
from workshop_lib.cli.methods import preset_in
from workshop_lib.errors import UsageError
from workshop_lib.models.base import REGISTRY
from workshop_lib.presets import NAMES, PRESETS, get_preset, resolve
from workshop_lib.studies.leaderboard import Leaderboard, collect, published_table, write_slurm

CI_OVERRIDES = {"rd4ad": {"epochs": 1}, "mmr": {"epochs": 1},
                "resad": {"epochs": 1, "coupling_layers": 2, "pos_embed_dim": 16},
                "mae-lora": {"architecture": "vit_micro", "epochs": 2, "warmup_epochs": 1}}


def test_every_method_has_both_presets_of_real_constructor_arguments():
    assert {(m, n) for m in REGISTRY for n in NAMES} == set(PRESETS)
    for (method, name), preset in PRESETS.items():
        parameters = inspect.signature(REGISTRY[method].__init__).parameters
        assert set(preset.config) <= set(parameters), (method, name)
        assert preset.source
        assert preset.preprocessing.size == (preset.imagesize, preset.imagesize)


def test_auto_is_paper_on_a_gpu_only():
    assert resolve("auto", "cpu") == "workshop" and resolve("paper") == "paper"
    with pytest.raises(ValueError, match="--preset"):
        resolve("fast")
    assert get_preset("rd4ad", "auto", "cpu").name == "workshop"


def test_notebook_values_override_a_preset_and_durations_are_announced():
    preset = get_preset("rd4ad", "workshop")
    assert preset.settings(epochs=None, lr=0.01) == {**preset.config, "lr": 0.01}
    assert preset.model(epochs=2).epochs == 2
    text = preset.expectation(200)
    assert ("about" in text and "200 training images" in text) or "no measured duration" in text


def test_cli_preset_gives_defaults_and_flags_still_win():
    argv = ["mmr", "train", "out", "-d", "washer", "--data_path", "d", "--preset", "workshop", "--epochs", "3"]
    args = build_parser(preset_in(argv)).parse_args(argv)
    workshop = get_preset("mmr", "workshop")
    assert (args.embed_dim, args.epochs, args.imagesize) == (workshop.config["embed_dim"], 3, workshop.imagesize)
    plain = build_parser(preset_in(argv[:-4])).parse_args(argv[:-4])
    assert plain.embed_dim == 768  # without --preset: the constructor's default
    with pytest.raises(UsageError, match="Unknown preset"):
        main(["mmr", "train", "out", "-d", "w", "--data_path", "d", "--preset", "fast"])


def test_slurm_array_lists_the_pending_tasks(tmp_path, synthetic_root):
    board = Leaderboard(tmp_path, str(synthetic_root), ["washer", "tile"], methods=["patchcore", "rd4ad"])
    scripts = write_slurm(board)
    assert (tmp_path / "slurm" / "runs.txt").read_text().split() == [
        "patchcore/washer", "patchcore/tile", "rd4ad/washer", "rd4ad/tile"]
    assert "compare-task" in scripts[-1].read_text() and "#SBATCH --array=0-3" in scripts[-1].read_text()
    assert published_table().set_index("method").loc["patchcore", "instance_auroc"] == 0.990


@pytest.mark.slow
def test_the_leaderboard_runs_every_method_resumes_and_merges(tmp_path, synthetic_root):
    command = ["compare", "--output", str(tmp_path / "board"), "--data_path", str(synthetic_root), "-d", "washer",
               "--resize", "64", "--imagesize", "64", "--workers", "2", "--overrides", json.dumps(CI_OVERRIDES)]
    table = main(command)
    assert sorted(table["method"]) == ["mae-lora", "mmr", "patchcore", "rd4ad", "resad"]
    assert table[["instance_auroc", "fit_seconds", "infer_ms_per_image", "peak_memory_mb"]].notna().all().all()
    trainable = table.set_index("method")["trainable_parameters"]
    assert trainable["patchcore"] == 0 and (trainable.drop("patchcore") > 0).all()
    assert table.set_index("method").loc["resad", "train_images"] == 4 * 30  # the four other synthetic classes
    results = tmp_path / "board" / "results"
    written = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    again = main(command)  # nothing pending: merged, not recomputed
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*.json")} == written
    pd.testing.assert_frame_equal(again.sort_values("method").reset_index(drop=True),
                                  collect(Leaderboard.load(tmp_path / "board")).sort_values("method")
                                  .reset_index(drop=True))
    assert (tmp_path / "board" / "leaderboard.csv").is_file() and (tmp_path / "board" / "leaderboard.png").is_file()
