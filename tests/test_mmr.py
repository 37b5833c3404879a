import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from helpers import train_subset

from workshop_lib.cli import main
from workshop_lib.data import load_dataset, make_synthetic_aebad
from workshop_lib.errors import WeightsUnavailableError
from workshop_lib.evaluation import evaluate
from workshop_lib.models import MMR, load_model
from workshop_lib.models.components.vit import sincos_pos_embed
from workshop_lib.models.mmr import MaskedStudent, MMRNetwork, lr_factor, reconstruction_loss
from workshop_lib.predictions import read_results_csv
from workshop_lib.training import CHECKPOINT_FILE

# The CI configuration: random-init ResNet-18 teacher (layers 1-3), ViT 192 x 2 blocks x 3 heads, patch 16, 64 px.
STUDENT = {"embed_dim": 192, "depth": 2, "num_heads": 3, "patch_size": 16}
TINY = {"backbone": "resnet18", "weights": None, "student_weights": None, **STUDENT, "batch_size": 4, "seed": 0}
TINY_FLAGS = ["-b", "resnet18", "--weights", "none", "--student_weights", "none", "--embed_dim", "192",
              "--depth", "2", "--num_heads", "3", "--resize", "64", "--imagesize", "64"]


@pytest.fixture(scope="module")
def washer64(synthetic_root):
    """8 training images at 64 px (a 4 x 4 patch grid): about a second per epoch."""
    return train_subset(synthetic_root, "washer", 8, size=64)


@pytest.fixture(scope="module")
def fitted64(washer64):
    return MMR(**TINY, epochs=2).fit(washer64, progress=False)


def test_student_levels_match_the_teacher():
    network = MMRNetwork("resnet18", None, None, 192, 2, 3, 16, seed=0)
    images = torch.randn(2, 3, 64, 96)  # a non-square grid (4 x 6 patches) works too
    teacher, student = network.distill(images, mask_ratio=0.4)
    assert [tuple(t.shape) for t in teacher] == [(2, 64, 16, 24), (2, 128, 8, 12), (2, 256, 4, 6)]
    assert [t.shape for t in teacher] == [s.shape for s in student]
    assert not any(t.requires_grad for t in teacher) and all(s.requires_grad for s in student)
    with torch.no_grad():
        unmasked = network.student(images)
        assert all(torch.equal(a, b) for a, b in zip(unmasked, network.student(images), strict=True))  # no noise
        assert not torch.allclose(unmasked[2], network.student(images, mask_ratio=0.4)[2])
        maps, scores = network.eval()(images)
    assert maps.shape == (2, 64, 96) and torch.equal(scores, maps.flatten(1).amax(1))
    with pytest.raises(ValueError, match="multiple of 16"):
        network.student(torch.randn(1, 3, 72, 64))
    with pytest.raises(ValueError, match="no pyramid branch"):  # layer4 is at stride 32: half the patch grid
        MMRNetwork("resnet18", ("layer2", "layer3", "layer4"), None, 192, 2, 3, 16, seed=0)


def mae_sincos_table(dim: int, grid: int) -> np.ndarray:
    """MAE's get_2d_sincos_pos_embed (models/MMR/utils.py) without its cls row, in numpy."""
    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coordinates = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)))
    return np.concatenate([one_d(dim // 2, coordinates[0]), one_d(dim // 2, coordinates[1])], axis=1)


def test_position_table_is_maes():
    np.testing.assert_allclose(sincos_pos_embed(192, 4, 4).numpy(), mae_sincos_table(192, 4), atol=1e-6)
    wide = sincos_pos_embed(192, 2, 3).reshape(2, 3, 192)  # a position's code does not depend on the grid
    assert torch.equal(wide, sincos_pos_embed(192, 4, 4).reshape(4, 4, 192)[:2, :3])


def test_loss_on_hand_built_features():
    teacher = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    assert float(reconstruction_loss(teacher, teacher)) == pytest.approx(0, abs=1e-6)
    assert float(reconstruction_loss(teacher, [-t for t in teacher])) == pytest.approx(4.0)  # 2 per level
    assert float(reconstruction_loss(teacher[:1], [-teacher[0]])) == pytest.approx(2.0)
    student = [torch.randn_like(t) for t in teacher]
    upstream = sum((1 - F.cosine_similarity(t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]),
                                            s.permute(0, 2, 3, 1).reshape(-1, s.shape[1]))).mean()
                   for t, s in zip(teacher, student, strict=True))  # each_patch_loss_function
    assert torch.isclose(reconstruction_loss(teacher, student), upstream)


def test_learning_rate_schedule_is_upstreams_stretched():
    factors = [lr_factor(epoch, 200) for epoch in range(200)]
    assert factors[0] == 0 and factors[25] == pytest.approx(0.5) and factors[50] == factors[118] == 1
    assert factors[119] == factors[158] == pytest.approx(0.1) and factors[159] == factors[199] == pytest.approx(0.01)
    assert [round(lr_factor(epoch, 20), 3) for epoch in (0, 4, 5, 11, 12, 15, 16, 19)] == [
        0, 0.8, 1, 1, 0.1, 0.1, 0.01, 0.01]


def test_resume_continues_from_the_saved_epoch(washer64, tmp_path):
    first = MMR(**TINY, epochs=2, checkpoint_dir=str(tmp_path), checkpoint_every=1).fit(washer64, progress=False)
    checkpoint = tmp_path / "washer" / CHECKPOINT_FILE
    assert len(first.losses_) == 2 and torch.load(checkpoint, weights_only=True)["epoch"] == 2
    same = MMR(**TINY, epochs=2, checkpoint_dir=str(tmp_path), resume=True).fit(washer64, progress=False)
    assert same.losses_ == first.losses_
    for name, tensor in first.learned_tensors().items():
        assert torch.equal(tensor, same.learned_tensors()[name]), name
    longer = MMR(**TINY, epochs=3, checkpoint_dir=str(tmp_path), resume=True).fit(washer64, progress=False)
    assert len(longer.losses_) == 3 and longer.losses_[:2] == first.losses_
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 3


def test_save_load_gives_identical_scores(fitted64, synthetic_root, tmp_path):
    path = fitted64.save(tmp_path / "model")
    loaded = load_model(path)
    assert isinstance(loaded, MMR)
    assert loaded.get_config() == json.loads(json.dumps(fitted64.get_config()))
    test = load_dataset(synthetic_root, "washer", "test", resize=64, imagesize=64)
    images = torch.stack([test[i]["image"] for i in (0, 14)])
    before, after = fitted64.predict(images), loaded.predict(images)
    np.testing.assert_array_equal(before.image_scores, after.image_scores)
    np.testing.assert_array_equal(before.anomaly_maps, after.anomaly_maps)
    assert before.anomaly_maps.shape == (2, 64, 64) and loaded.losses_ == fitted64.losses_
    with pytest.raises(RuntimeError, match="not fitted"):
        MMR(**TINY).predict(images)


def fake_mae_checkpoint(student: MaskedStudent) -> dict[str, torch.Tensor]:
    """What mae_visualize_vit_base.pth holds: the encoder under MAE's names, plus its mask token, position table
    and pixel decoder (here tiny), none of which the MMR student may take."""
    encoder = {k: v.clone() for k, v in student.state_dict().items()
               if not k.startswith(("pyramid.", "fpn_mask_token"))}
    dim = student.cls_token.shape[-1]
    return {**encoder, "mask_token": torch.full((1, 1, dim), 7.0), "pos_embed": torch.full((1, 17, dim), 7.0),
            "decoder_embed.weight": torch.zeros(16, dim), "decoder_pos_embed": torch.zeros(1, 17, 16),
            "decoder_blocks.0.norm1.weight": torch.zeros(16), "decoder_pred.weight": torch.zeros(768, 16)}


def test_mae_checkpoint_loading_and_errors(tmp_path):
    source = MMRNetwork("resnet18", None, None, **STUDENT, seed=1).student  # other seed: other values
    checkpoint = fake_mae_checkpoint(source)
    torch.save({"model": checkpoint}, tmp_path / "mae.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing unexpected, nothing missing: no warning
        student = MMR(**{**TINY, "student_weights": str(tmp_path / "mae.pth")}).network.student
    scratch = MMR(**TINY).network.student  # same seed, random init
    for name, tensor in student.state_dict().items():
        expected = source.state_dict()[name] if name in checkpoint else scratch.state_dict()[name]
        assert torch.equal(tensor, expected), name
    assert not torch.equal(student.fpn_mask_token, checkpoint["mask_token"])  # MAE's mask token is dropped

    partial = {k: v for k, v in checkpoint.items() if k != "norm.weight"} | {"head.weight": torch.zeros(2, 192)}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    with pytest.warns(UserWarning, match=r"partial.pth.*1 encoder tensors missing \['norm.weight'\].*head.weight"):
        _ = MMR(**{**TINY, "student_weights": str(tmp_path / "partial.pth")}).network

    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    torch.save({"model": {"classifier.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    bigger = fake_mae_checkpoint(MMRNetwork("resnet18", None, None, 256, 2, 4, 16, seed=0).student)
    torch.save({"model": bigger}, tmp_path / "vit_256.pth")
    for name, message in [("garbage.pth", "Cannot read"), ("other.pth", "not an MAE checkpoint"),
                          ("vit_256.pth", "does not fit the student ViT"), ("missing.pth", "not found")]:
        with pytest.raises(WeightsUnavailableError, match=message) as error:
            _ = MMR(**{**TINY, "student_weights": str(tmp_path / name)}).network
        assert name in str(error.value) and "mae_visualize_vit_base.pth" in str(error.value)

    saved = MMR(**{**TINY, "student_weights": str(tmp_path / "mae.pth")}, epochs=1)
    saved._network = MMRNetwork("resnet18", None, None, **STUDENT, seed=0)  # "fitted" without training
    saved.image_size_, saved.losses_ = (64, 64), [0.0]
    folder = saved.save(tmp_path / "saved")
    (tmp_path / "mae.pth").unlink()  # loading a trained model does not read the initial weights again
    assert load_model(folder).student_weights == str(tmp_path / "mae.pth")


def test_imagenet_student_weights_offline_say_how_to_get_them():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(WeightsUnavailableError, match="vit_base_patch16_224.mae") as error:
        _ = MMR(backbone="resnet18", weights=None, student_weights="imagenet").network
    assert "mae_visualize_vit_base.pth" in str(error.value) and "--student_weights" in str(error.value)


def test_short_training_beats_chance(synthetic_root):
    """Bundled ImageNet EfficientNet-Lite0 teacher (strides 4/8/16), tiny random-init ViT, 64 px, 20 epochs."""
    train = load_dataset(synthetic_root, "washer", "train", resize=64, imagesize=64)
    test = load_dataset(synthetic_root, "washer", "test", resize=64, imagesize=64)
    model = MMR("efficientnet_lite0", weights="imagenet", student_weights=None, **STUDENT, epochs=20,
                batch_size=8).fit(train, progress=False)
    assert model.losses_[-1] < 0.5 * model.losses_[0]
    _, metrics = evaluate(model, test, progress=False)
    assert metrics["instance_auroc"] > 0.6 and metrics["full_pixel_auroc"] > 0.7, metrics


def test_cli_train_then_evaluate(synthetic_root, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    trained = subprocess.run([sys.executable, "-m", "workshop_lib", "mmr", "train", str(tmp_path / "runs"),
                              "--data_path", str(synthetic_root), "-d", "washer", *TINY_FLAGS, "--epochs", "1",
                              "--batch_size", "8", "--save_model", "--checkpoint_dir", str(tmp_path / "ckpt")],
                             capture_output=True, text=True, cwd=REPO, env=env)
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "runs" / "project" / "group"
    assert (tmp_path / "ckpt" / "washer" / CHECKPOINT_FILE).is_file()
    model = load_model(run / "models" / "mvtec_washer")
    assert isinstance(model, MMR) and model.embed_dim == 192 and model.batch_size == 8 and model.mask_ratio == 0.4
    table = read_results_csv(run / "results.csv")
    evaluated = main(["mmr", "evaluate", str(tmp_path / "evaluated"),
                      "--model_path", str(run / "models" / "mvtec_washer"), "-d", "washer",
                      "--data_path", str(synthetic_root), "--resize", "64", "--imagesize", "64"])
    assert evaluated["results"]["mvtec_washer"]["instance_auroc"] == pytest.approx(
        table.loc["mvtec_washer", "instance_auroc"], abs=1e-6)


@pytest.mark.slow
def test_notebook_runs_at_ci_size(run_notebook, tmp_path_factory):
    """Notebook 09 on a synthetic domain-shift part: MMR per domain, then a 2-tier x 2-seed study with PatchCore."""
    data = make_synthetic_aebad(tmp_path_factory.mktemp("aebad") / "data", n_train=12, n_test_good=3,
                                n_test_defect=1, image_size=64)
    notebook = run_notebook("09_mmr_fewshot_decay", data_path=str(data), category="washer",
                            backbone="efficientnet_lite0", weights="imagenet", student_weights="none",
                            **STUDENT, image_size=64, resize=64, epochs=10, batch_size=4, study_tiers=[25, 100],
                            study_seeds=[0, 1], study_epochs=5, patchcore_backbone="efficientnet_lite0",
                            patchcore_weights="imagenet", sampler_percentage=0.1)
    output_dir = Path(notebook.metadata["output_dir"])
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "✓ one row per domain and their mean" in printed and "✗" not in printed
    for figure in ("09_domains.png", "09_training_loss.png", "09_fewshot_decay.png"):
        path = output_dir / "figures" / figure
        assert path.is_file() and path.stat().st_size > 5000, figure
    table = pd.read_csv(output_dir / "09_fewshot.csv")
    assert set(table["method"]) == {"MMR", "PatchCore"}
    assert set(table["domain"]) == {"same", "background", "illumination", "view", "mean"}
    assert len(table) == 2 * 2 * 2 * 5  # methods x tiers x seeds x (4 domains + mean)
    assert (output_dir / "fewshot" / "mmr_slurm" / "slurm" / "fewshot_array.sh").is_file()
