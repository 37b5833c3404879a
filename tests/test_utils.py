import sys

import pandas as pd
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "work"))
import utils  # noqa: E402  (work/utils.py, as the notebooks import it)


def test_commandline_args_restores_argv_even_on_error():
    before = list(sys.argv)
    with pytest.raises(KeyError), utils.commandline_args("command", "--x", "1"):
        assert sys.argv == ["command", "--x", "1"]
        raise KeyError("boom")
    assert sys.argv == before


def test_train_args_mirror_the_first_workshop():
    args = utils.get_train_args("0000", ("experiments", "step1"), ("bottle", "cable"), data_path="/data")
    assert args[:3] == ["command", "patchcore", "train"]
    joined = " ".join(args)
    assert "--log_group 0000 --log_project step1 experiments" in joined
    assert "-b wideresnet50" in joined and "-p 0.001" in joined and "-d bottle -d cable" in joined
    assert joined.endswith("--data_path /data")
    assert utils.ALL_CATEGORIES[0] == "bottle" and len(utils.ALL_CATEGORIES) == 15


@pytest.mark.slow
def test_trainer_and_evaluator_run_inside_commandline_args(synthetic_root, tmp_path):
    train_args = utils.get_train_args("0000", (str(tmp_path / "experiments"), "step1"), ("capsule",),
                                      backbone="efficientnet_lite0", image_size=64, resize=64, sampler_percentage=0.1,
                                      data_path=str(synthetic_root))
    with utils.commandline_args(*train_args):
        result = utils.trainer()  # no try/except SystemExit needed
    model_dir = tmp_path / "experiments" / "step1" / "0000" / "models" / "mvtec_capsule"
    assert result["output"] == model_dir.parents[1] and model_dir.is_dir()
    eval_args = utils.get_evaluate_args(str(tmp_path / "evaluated"), [str(model_dir)], ("capsule",), resize=64,
                                        image_size=64, data_path=str(synthetic_root))
    with utils.commandline_args(*eval_args):
        evaluated = utils.evaluator()
    assert evaluated["output"].parent.parent == tmp_path / "evaluated"
    table = pd.read_csv(evaluated["output"] / "results.csv", index_col="Row Names")
    assert table.loc["mvtec_capsule", "instance_auroc"] == pytest.approx(
        result["results"]["mvtec_capsule"]["instance_auroc"], abs=1e-6)


def test_data_root_falls_back_to_synthetic(tmp_path, capsys):
    from workshop_lib.data import resolve_data_root
    from workshop_lib.data.synthetic import MANIFEST

    root, synthetic = resolve_data_root(tmp_path)
    assert synthetic and (root / MANIFEST).is_file() and "synthetic" in capsys.readouterr().out
    (tmp_path / "data" / "mvtec_anomaly_detection" / "bottle" / "train").mkdir(parents=True)
    assert resolve_data_root(tmp_path) == (tmp_path / "data" / "mvtec_anomaly_detection", False)
