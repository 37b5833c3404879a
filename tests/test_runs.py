"""Runs that fail early and cleanly: every split checked before the first epoch, no empty run folders, results
kept per finished category, resumes that refuse another configuration, Ctrl+C that says how to continue."""

import pytest
import torch
from helpers import make_mvtec_category, train_subset

from workshop_lib.cli import main, run
from workshop_lib.errors import CheckpointError, TrainingInterrupted
from workshop_lib.models import RD4AD
from workshop_lib.tasks import is_finished
from workshop_lib.training import CHECKPOINT_FILE, train_epochs

TINY = {"backbone": "resnet18", "weights": None, "batch_size": 4, "seed": 0}
TRAIN = ["rd4ad", "train", "--log_project", "p", "--log_group", "g", "-b", "resnet18", "--weights", "none",
         "--epochs", "1", "--batch_size", "4", "--resize", "64", "--imagesize", "64"]


def tiny_training(lr=0.1, interrupt_at=None):
    """A linear model on fixed data; ``interrupt_at`` raises KeyboardInterrupt in that epoch (as Ctrl+C does)."""
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    data = [torch.randn(8, 4) for _ in range(2)]
    calls = {"n": 0}

    def loss(batch):
        calls["n"] += 1
        if interrupt_at is not None and calls["n"] > 2 * interrupt_at:
            raise KeyboardInterrupt
        return module(batch).pow(2).mean()

    return module, optimizer, (lambda: data), loss


def test_resume_refuses_other_settings_and_fewer_epochs(tmp_path):
    module, optimizer, batches, loss = tiny_training()
    train_epochs(module, optimizer, batches, loss, 3, checkpoint_dir=tmp_path, progress=False,
                 settings={"lr": 0.1, "backbone": "resnet18"})
    with pytest.raises(CheckpointError, match=r"lr: 0.1 in the checkpoint, 0.01 now\). .*--resume"):
        train_epochs(*tiny_training()[:2], batches, loss, 3, checkpoint_dir=tmp_path, resume=True,
                     progress=False, settings={"lr": 0.01, "backbone": "resnet18"})
    with pytest.raises(CheckpointError, match="backbone: 'resnet18' in the checkpoint, 'wide_resnet50_2' now"):
        train_epochs(*tiny_training()[:2], batches, loss, 3, checkpoint_dir=tmp_path, resume=True,
                     progress=False, settings={"lr": 0.1, "backbone": "wide_resnet50_2"})
    with pytest.raises(CheckpointError, match="already trained 3 epochs, more than the 2 asked for: pass --epochs 3"):
        train_epochs(*tiny_training()[:2], batches, loss, 2, checkpoint_dir=tmp_path, resume=True,
                     progress=False, settings={"lr": 0.1, "backbone": "resnet18"})
    more = train_epochs(*tiny_training()[:2], batches, loss, 5, checkpoint_dir=tmp_path, resume=True,
                        progress=False, settings={"lr": 0.1, "backbone": "resnet18"})
    assert len(more) == 5  # more epochs continue the checkpoint (3 restored + 2 trained)


def test_resume_without_a_checkpoint_folder_is_an_error(tmp_path):
    module, optimizer, batches, loss = tiny_training()
    with pytest.raises(CheckpointError, match="needs the folder of the checkpoint: pass checkpoint_dir"):
        train_epochs(module, optimizer, batches, loss, 2, resume=True, progress=False)


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, capsys):
    module, optimizer, batches, loss = tiny_training(interrupt_at=2)
    with pytest.raises(TrainingInterrupted, match=rf"after 2 of 5 epochs\. The last checkpoint is .*{CHECKPOINT_FILE} "
                                                  r"\(epoch 2\); run the same training again with --resume"):
        train_epochs(module, optimizer, batches, loss, 5, checkpoint_dir=tmp_path, progress=False)
    module, optimizer, batches, loss = tiny_training(interrupt_at=1)
    with pytest.raises(TrainingInterrupted, match="No checkpoint was written: pass --checkpoint_dir"):
        train_epochs(module, optimizer, batches, loss, 5, progress=False)


def test_a_changed_learning_rate_is_refused_by_a_model(synthetic_root, tmp_path):
    washer = train_subset(synthetic_root, "washer", 4)
    RD4AD(**TINY, epochs=1, checkpoint_dir=str(tmp_path)).fit(washer, progress=False)
    with pytest.raises(CheckpointError, match="lr: 0.005 in the checkpoint, 0.001 now"):
        RD4AD(**TINY, epochs=2, lr=0.001, checkpoint_dir=str(tmp_path), resume=True).fit(washer, progress=False)
    with pytest.raises(CheckpointError, match="preprocessing"):
        RD4AD(**TINY, epochs=2, checkpoint_dir=str(tmp_path), resume=True).fit(
            train_subset(synthetic_root, "washer", 4, size=96), progress=False)


def test_bad_categories_and_files_fail_before_training_and_leave_no_run_folder(synthetic_root, tmp_path, capsys):
    code = run([TRAIN[0], TRAIN[1], str(tmp_path), *TRAIN[2:], "-d", "washer", "-d", "nocat",
                "--data_path", str(synthetic_root)])
    assert code == 1 and "Category 'nocat' folder not found" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    root = make_mvtec_category(tmp_path / "data")
    (root / "thing" / "test" / "good" / "000.png").write_bytes(b"not an image")
    code = run([TRAIN[0], TRAIN[1], str(tmp_path), *TRAIN[2:], "-d", "thing", "--data_path", str(root)])
    assert code == 1 and "Cannot read image" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_results_are_written_per_finished_category(synthetic_root, tmp_path, monkeypatch):
    """A failure in the second category keeps the first one's results.csv row."""
    fit = RD4AD.fit
    calls = {"n": 0}

    def failing_fit(self, dataset, progress=True):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of memory")
        return fit(self, dataset, progress)

    monkeypatch.setattr(RD4AD, "fit", failing_fit)
    with pytest.raises(RuntimeError):
        main([TRAIN[0], TRAIN[1], str(tmp_path), *TRAIN[2:], "-d", "washer", "-d", "tile",
              "--data_path", str(synthetic_root)])
    results = (tmp_path / "p" / "g" / "results.csv").read_text().splitlines()
    assert results[1].startswith("mvtec_washer,") and len(results) == 3  # header, washer, Mean
    assert not is_finished(tmp_path / "p" / "g", ["mvtec_washer", "mvtec_tile"])  # notebooks retrain it


def test_interrupted_cli_run_exits_130_with_the_resume_hint(synthetic_root, tmp_path, monkeypatch, capsys):
    def interrupted(self, dataset, progress=True):
        raise TrainingInterrupted("Training stopped after 1 of 2 epochs. The last checkpoint is x/last.pt (epoch 1)")

    monkeypatch.setattr(RD4AD, "fit", interrupted)
    code = run([TRAIN[0], TRAIN[1], str(tmp_path), *TRAIN[2:], "-d", "washer", "--data_path", str(synthetic_root)])
    error = capsys.readouterr().err
    assert code == 130 and "Interrupted. Training stopped after 1 of 2 epochs" in error and "Traceback" not in error
    assert not (tmp_path / "p" / "g").exists()  # nothing was written: no empty run folder either
