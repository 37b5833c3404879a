import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_subset
from safetensors.torch import load_file

from workshop_lib.cli import main
from workshop_lib.data import load_dataset
from workshop_lib.errors import ModelFileError, WeightsUnavailableError
from workshop_lib.evaluation import evaluate
from workshop_lib.models import MAELoRA, load_model
from workshop_lib.models.components.vit import sincos_pos_embed
from workshop_lib.models.mae_lora import (
    ARCHITECTURES,
    MaskedAutoencoder,
    inference_masks,
    patch_grid,
    patchify,
    unpatchify,
    warmup_cosine,
)
from workshop_lib.predictions import Predictions, read_results_csv
from workshop_lib.training import CHECKPOINT_FILE

MICRO = {"architecture": "vit_micro", "patch_size": 8, "batch_size": 4, "seed": 0}
# The CI configuration that learns (measured in docs/mae_lora.md): decoder blocks trained too, a high learning rate.
CI = {**MICRO, "trainable": "lora+decoder", "lr": 5e-3, "epochs": 60, "warmup_epochs": 3}


@pytest.fixture(scope="module")
def washer8(synthetic_root):
    return train_subset(synthetic_root, "washer", 8)


@pytest.fixture(scope="module")
def fitted(washer8):
    """2 epochs on 8 images, pixel targets (no per-patch normalisation): a second or two."""
    return MAELoRA(**MICRO, epochs=2, warmup_epochs=1, norm_pix_loss=False).fit(washer8, progress=False)


@pytest.fixture(scope="module")
def test_images(synthetic_root):
    test = load_dataset(synthetic_root, "washer", "test", resize=64, imagesize=64)
    return torch.stack([test[i]["image"] for i in (0, 3, 10, 12, 14)])


def test_four_masks_are_complementary_and_hide_every_patch_once():
    masks = inference_masks(32, 32, 4)  # the original's 32 x 32 grid (224 px, 7-px patches)
    assert masks.shape == (4, 1024) and masks.dtype == torch.bool
    assert torch.equal(masks.sum(0), torch.ones(1024, dtype=torch.long))  # each patch hidden exactly once
    assert masks.sum(1).tolist() == [256] * 4  # each mask hides 25 %
    grid = masks.reshape(4, 32, 32)
    for i in range(4):  # mask i hides the columns i, i + 4, ...: whole columns, as the original's flat index mod 4
        assert torch.equal(grid[i], (torch.arange(32) % 4 == i).expand(32, 32))
    assert patch_grid((224, 224), 7, 4) == (32, 32)
    with pytest.raises(ValueError, match="multiple of patch_size=7"):
        patch_grid((225, 224), 7, 4)
    staggered = inference_masks(*patch_grid((224, 224), 16, 4), 4).reshape(4, 14, 14)  # MAE's 16-px patches
    assert torch.equal(staggered.sum(0), torch.ones(14, 14, dtype=torch.long))
    assert staggered[0, 0, 0] and staggered[0, 1, 2]  # flat index mod 4: shifted by 2 columns per row
    with pytest.raises(ValueError, match="multiple of patch_size x inference_masks = 64"):
        patch_grid((224, 208), 16, 4)  # 14 x 13 grid: 182 patches do not split into 4 masks
    with pytest.raises(ValueError, match="inference_masks"):
        MAELoRA(**MICRO).build_network((72, 40))


def test_patchify_position_embedding_and_schedule():
    images = torch.randn(2, 3, 16, 24)
    patches = patchify(images, 8)
    assert patches.shape == (2, 6, 192)
    assert torch.equal(patches[1, 4].reshape(8, 8, 3), images[1, :, 8:16, 8:16].permute(1, 2, 0))  # row 1, column 1
    assert torch.equal(unpatchify(patches, 8, 2, 3), images)
    # MAE's sin-cos layout: [sin(col w), cos(col w), sin(row w), cos(row w)], w_i = 1 / 10000 ** (i / (dim / 4))
    embedding = sincos_pos_embed(8, 2, 3)
    w = torch.tensor([1.0, 1 / 100])
    row, column = 1, 2
    expected = torch.cat([(column * w).sin(), (column * w).cos(), (row * w).sin(), (row * w).cos()])
    torch.testing.assert_close(embedding[row * 3 + column], expected)
    # util/lr_sched.py: linear warm-up from 0, half-cycle cosine to min_lr
    assert warmup_cosine(0, 10, 110, 0.1) == 0 and warmup_cosine(5, 10, 110, 0.1) == 0.5
    assert warmup_cosine(10, 10, 110, 0.1) == 1 and warmup_cosine(60, 10, 110, 0.1) == pytest.approx(0.55)
    assert warmup_cosine(110, 10, 110, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("rank", [2, 4])
def test_lora_freezes_the_base_and_adds_rank_times_in_plus_out(rank):
    size = ARCHITECTURES["vit_micro"]
    network = MAELoRA(**MICRO, lora_rank=rank).build_network((64, 64))
    named = dict(network.named_parameters())
    lora = {n: p for n, p in named.items() if "lora_" in n}
    # qkv (D -> 3D) and proj (D -> D) in every block: rank * (D + 3D + D + D) = 6 D rank per block
    expected = rank * 6 * (size.depth * size.embed_dim + size.decoder_depth * size.decoder_embed_dim)
    assert sum(p.numel() for p in lora.values()) == expected
    assert len(lora) == 4 * (size.depth + size.decoder_depth) and all(p.requires_grad for p in lora.values())
    assert not any("patch_embed" in n for n in lora)  # the patch embedding's Conv2d (also "proj") has no adapter
    in_blocks = [n for n in named if n.startswith(("blocks.", "decoder_blocks.")) and "lora_" not in n]
    assert in_blocks and not any(named[n].requires_grad for n in in_blocks)  # qkv, proj, MLP, norms frozen
    heads = ["patch_embed.proj.weight", "cls_token", "norm.weight", "decoder_embed.weight", "mask_token",
             "decoder_pred.weight"]
    assert all(named[n].requires_grad for n in heads)  # the original's --freeze_non_lora trains these
    assert all(torch.count_nonzero(p) == 0 for n, p in lora.items() if "lora_B" in n)  # starts as the base network
    wider = MAELoRA(**MICRO, lora_rank=rank, trainable="lora+decoder").build_network((64, 64))
    decoder = sum(p.numel() for n, p in wider.named_parameters()
                  if n.startswith("decoder_blocks.") and "lora_" not in n)
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    assert sum(p.numel() for p in wider.parameters() if p.requires_grad) == trainable + decoder


def test_training_changes_only_trainable_parameters(fitted, washer8):
    fresh = dict(MAELoRA(**MICRO).build_network((64, 64)).named_parameters())
    trained = dict(fitted.network.named_parameters())
    for name, parameter in trained.items():
        changed = not torch.equal(parameter.detach().cpu(), fresh[name].detach())
        assert changed == parameter.requires_grad or "lora_A" in name, name  # A may barely move; B must
    assert any(torch.count_nonzero(p) for n, p in trained.items() if "lora_B" in n)
    counts = fitted.parameter_counts()
    assert counts["trainable"] + counts["frozen"] == sum(p.numel() for p in trained.values())
    assert len(fitted.losses_) == 2 and all(math.isfinite(x) for x in fitted.losses_)


def test_inference_keeps_three_quarters_of_the_patches_and_uses_each_hidden_pass(synthetic_root, test_images):
    """Original bug 1: int(patches_per_side * 0.75) = 12 visible patches of a 16 x 16 grid instead of 192."""
    model = MAELoRA(**{**MICRO, "patch_size": 4}, epochs=1, warmup_epochs=0, norm_pix_loss=False)
    model.fit(train_subset(synthetic_root, "tile", 4), progress=False)
    kept = []
    encode = model.network.encode
    model.network.encode = lambda images, keep: kept.append(keep.shape) or encode(images, keep)
    result = model.reconstruct(test_images[:2])
    del model.network.encode
    assert kept == [torch.Size([2, 192])] * 4  # 4 passes, each sees 256 - 64 patches
    assert result.masks.shape == (4, 16, 16) and result.error.shape == (2, 64, 64)
    # a patch's reconstruction comes from the pass that hid it, so its own pixels cannot change it
    changed = test_images[:2].clone()
    changed[:, :, 20:24, 28:32] = 5.0  # patch (row 5, column 7)
    other = model.reconstruct(changed)
    torch.testing.assert_close(other.reconstruction[..., 20:24, 28:32], result.reconstruction[..., 20:24, 28:32])
    assert not torch.allclose(other.reconstruction[..., 20:24, 32:36], result.reconstruction[..., 20:24, 32:36])
    assert other.error[:, 20:24, 28:32].mean() > 10 * result.error[:, 20:24, 28:32].mean()


def test_scores_are_per_image_and_do_not_depend_on_the_batch(fitted, test_images):
    """Original bug 2: the score was the maximum over the whole batch."""
    together = fitted.predict(test_images)
    alone = [fitted.predict(image[None]) for image in test_images]
    np.testing.assert_allclose(together.image_scores, [o.image_scores[0] for o in alone], rtol=1e-5)
    np.testing.assert_allclose(together.anomaly_maps, np.concatenate([o.anomaly_maps for o in alone]),
                               rtol=1e-5, atol=1e-6)
    assert together.image_scores.shape == (5,) and together.anomaly_maps.shape == (5, 64, 64)
    assert len(set(together.image_scores.tolist())) == 5
    np.testing.assert_allclose(together.image_scores, together.anomaly_maps.reshape(5, -1).max(1))


def test_norm_pix_reconstruction_is_denormalised_correctly(washer8, test_images):
    """Original bug 3: (pred + mean) * std. A perfect normalised prediction must give a zero error."""
    model = MAELoRA(**MICRO, epochs=1, warmup_epochs=0).fit(washer8, progress=False)
    target = patchify(test_images[:2], 8)
    mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6).sqrt()
    perfect = ((target - mean) / std)
    model.network.forward = lambda images, keep: perfect
    result = model.reconstruct(test_images[:2])
    del model.network.forward
    assert result.error.abs().max() < 1e-8
    torch.testing.assert_close(result.reconstruction, test_images[:2])


def test_save_load_keeps_only_what_trained(fitted, tmp_path, test_images):
    path = fitted.save(tmp_path / "model")
    tensors = load_file(str(path / "tensors.safetensors"))
    assert sum(t.numel() for t in tensors.values()) == fitted.parameter_counts()["trainable"]
    loaded = load_model(path, device="cpu")
    assert isinstance(loaded, MAELoRA) and loaded.image_size_ == (64, 64)
    np.testing.assert_allclose(loaded.predict(test_images).anomaly_maps, fitted.predict(test_images).anomaly_maps,
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(FileExistsError, match="overwrite"):
        fitted.save(path)
    document = json.loads((path / "config.json").read_text())
    document["config"]["seed"] = 1  # another random base network: the adapters would not fit it
    (path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ModelFileError, match="frozen base network"):
        load_model(path)


def test_resume_continues_from_the_saved_epoch(washer8, tmp_path):
    settings = {**MICRO, "warmup_epochs": 0, "checkpoint_dir": str(tmp_path), "checkpoint_every": 1}
    first = MAELoRA(**settings, epochs=2).fit(washer8, progress=False)
    assert (tmp_path / "washer" / CHECKPOINT_FILE).is_file()
    resumed = MAELoRA(**settings, epochs=3, resume=True).fit(washer8, progress=False)
    assert len(resumed.losses_) == 3 and resumed.losses_[:2] == first.losses_


def test_bad_settings_fail_clearly(washer8):
    with pytest.raises(ValueError, match="warmup_epochs"):
        MAELoRA(**MICRO, epochs=2, warmup_epochs=2).fit(washer8, progress=False)
    with pytest.raises(WeightsUnavailableError, match="not 'imagenet'"):
        MAELoRA(**MICRO, weights="imagenet").build_network((64, 64))
    with pytest.raises(ValueError, match="trainable"):
        MAELoRA(**MICRO, trainable="all").build_network((64, 64))
    with pytest.raises(ValueError, match="empty"):
        MAELoRA(**MICRO).fit([], progress=False)


def test_mae_checkpoints_load_with_a_new_patch_embedding(tmp_path):
    """A facebookresearch/mae-style file ({"model": state_dict}) of another patch size, with and without decoder."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        source = MaskedAutoencoder(ARCHITECTURES["vit_micro"], (64, 64), 16)
    full = tmp_path / "mae_visualize_micro.pth"
    torch.save({"model": source.state_dict()}, full)
    with pytest.warns(UserWarning, match="re-initialised for 8x8 patches"):
        network = MAELoRA(**MICRO, weights=str(full)).build_network((64, 64))
    loaded = dict(network.named_parameters())
    for name in ("blocks.1.mlp.fc1.weight", "decoder_blocks.0.norm1.weight", "cls_token", "mask_token"):
        assert torch.equal(loaded[name], source.state_dict()[name])
    assert torch.equal(loaded["blocks.0.attn.qkv.base_layer.weight"], source.blocks[0].attn.qkv.weight)
    assert loaded["patch_embed.proj.weight"].shape == (64, 3, 8, 8)

    encoder_only = tmp_path / "mae_pretrain_micro.pth"
    torch.save({"model": {k: v for k, v in source.state_dict().items() if not k.startswith(("decoder", "mask"))}},
               encoder_only)
    with pytest.warns(UserWarning, match="no decoder weights"):
        MAELoRA(**{**MICRO, "patch_size": 16}, weights=str(encoder_only)).build_network((64, 64))
    with pytest.raises(WeightsUnavailableError, match="does not fit this architecture"):
        MAELoRA(**{**MICRO, "architecture": "vit_tiny"}, weights=str(full)).build_network((64, 64))


@pytest.mark.slow
def test_ci_configuration_learns_and_beats_chance(synthetic_root):
    """vit_micro, 64 px, 60 epochs of 30 images: a few seconds per category on one CPU core."""
    image, pixel = [], []
    for category in ("tile", "capsule"):
        train = load_dataset(synthetic_root, category, "train", resize=64, imagesize=64)
        test = load_dataset(synthetic_root, category, "test", resize=64, imagesize=64)
        model = MAELoRA(**CI).fit(train, progress=False)
        assert model.losses_[-1] < 0.5 * model.losses_[0]
        _, metrics = evaluate(model, test, progress=False)
        image.append(metrics["instance_auroc"])
        pixel.append(metrics["full_pixel_auroc"])
    assert np.mean(image) > 0.65 and min(image) > 0.6, image
    assert min(pixel) > 0.65, pixel


@pytest.mark.slow
def test_cli_train_and_evaluate(synthetic_root, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    result = main(["mae-lora", "train", str(tmp_path / "runs"), "--data_path", str(synthetic_root), "-d", "washer",
                   "--resize", "64", "--imagesize", "64", "--architecture", "vit_micro", "--patch_size", "8",
                   "--epochs", "2", "--warmup_epochs", "1", "--batch_size", "8", "--lora_rank", "2",
                   "--no-norm_pix_loss", "--smoothing_sigma", "2", "--save_model", "--checkpoint_dir",
                   str(checkpoints), "--checkpoint_every", "1"])
    run = Path(result["output"])
    assert (checkpoints / "washer" / CHECKPOINT_FILE).is_file()
    predictions = Predictions.load(run / "predictions" / "mvtec_washer.npz")
    assert predictions.anomaly_maps.shape == (25, 64, 64)
    model = load_model(run / "models" / "mvtec_washer")
    assert (model.lora_rank, model.norm_pix_loss, model.smoothing_sigma, model.batch_size) == (2, False, 2.0, 8)
    evaluated = main(["mae-lora", "evaluate", str(tmp_path / "evaluated"),
                      "--model_path", str(run / "models" / "mvtec_washer"), "-d", "washer",
                      "--data_path", str(synthetic_root), "--resize", "64", "--imagesize", "64"])
    assert evaluated["results"]["mvtec_washer"]["instance_auroc"] == result["results"]["mvtec_washer"]["instance_auroc"]
    assert list(read_results_csv(evaluated["output"] / "results.csv").index) == ["mvtec_washer", "Mean"]


@pytest.mark.slow
def test_notebook_runs_at_ci_size(run_notebook):
    notebook = run_notebook("11_mae_lora", categories=["tile", "capsule"], image_size=64, resize=64,
                            architecture="vit_micro", patch_size=8, trainable="lora+decoder", epochs=60,
                            warmup_epochs=3, batch_size=4, lr=5e-3, weights="none",
                            patchcore_backbone="efficientnet_lite0", patchcore_weights="imagenet",
                            sampler_percentage=0.1)
    output_dir = Path(notebook.metadata["output_dir"])
    for figure in ("11_training_loss.png", "11_inference_masks.png", "11_reconstructions.png",
                   "11_mae_vs_patchcore.png"):
        path = output_dir / "figures" / figure
        assert path.is_file() and path.stat().st_size > 5000, figure
    text = "\n".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "✗" not in text and "✓" in text
    results = read_results_csv(output_dir / "mae_lora" / "run" / "results.csv")
    assert list(results.index) == ["mvtec_tile", "mvtec_capsule", "Mean"]
