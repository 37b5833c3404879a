import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_subset
from scipy.ndimage import gaussian_filter

from workshop_lib.cli import main
from workshop_lib.data import load_dataset
from workshop_lib.evaluation import evaluate
from workshop_lib.exports.rd4ad import onnx_difference
from workshop_lib.maps import cosine_distance_map, gaussian_blur, split_tiles, stitch_tiles
from workshop_lib.models import RD4AD, load_model
from workshop_lib.models.rd4ad import RD4ADNetwork, distillation_loss
from workshop_lib.predictions import Predictions, read_results_csv
from workshop_lib.training import CHECKPOINT_FILE, count_parameters

TINY = {"backbone": "mobilenet_v2", "weights": None, "batch_size": 4, "seed": 0}


@pytest.fixture(scope="module")
def washer32(synthetic_root):
    """8 training images at 32 px (the smallest size the network takes): seconds per epoch."""
    return train_subset(synthetic_root, "washer", 8, size=32)


@pytest.fixture(scope="module")
def fitted32(washer32):
    return RD4AD(**TINY, epochs=1).fit(washer32, progress=False)


def test_network_shapes_loss_and_size():
    network = RD4ADNetwork("resnet18", None, seed=0)
    images = torch.randn(2, 3, 64, 64)
    teacher, student = network.distill(images)
    assert [tuple(t.shape) for t in teacher] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]
    assert [t.shape for t in teacher] == [s.shape for s in student]
    assert not any(t.requires_grad for t in teacher) and all(s.requires_grad for s in student)
    # upstream's de_resnet18 + BN_layer(AttnBasicBlock, 2) count 15.9 M with BN_layer's unused conv4/bn4 (525,312)
    assert count_parameters(network.student) + 525_312 == 15_908_480
    loss = distillation_loss(teacher, student)
    expected = sum((1 - torch.nn.functional.cosine_similarity(t.flatten(1), s.flatten(1))).mean()
                   for t, s in zip(teacher, student, strict=True))
    assert loss.shape == () and torch.isclose(loss, expected) and 0 < loss.item() < 6
    assert float(distillation_loss(teacher, teacher)) == pytest.approx(0, abs=1e-6)
    maps, scores = network.eval()(images)
    assert maps.shape == (2, 64, 64) and scores.shape == (2,)
    assert torch.equal(scores, maps.flatten(1).max(1).values)


def test_anomaly_map_matches_upstream_recipe():
    rng = np.random.default_rng(0)
    for shape in [(2, 64, 64), (1, 10, 7), (1, 32, 96)]:  # maps smaller than the 16-pixel kernel radius too
        maps = rng.random(shape).astype(np.float32)
        expected = np.stack([gaussian_filter(m, sigma=4) for m in maps])
        np.testing.assert_allclose(gaussian_blur(torch.from_numpy(maps)).numpy(), expected, atol=2e-6)
    a = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    assert cosine_distance_map(a, a, (16, 16)).abs().max() < 1e-6
    opposite = cosine_distance_map(a, [-x for x in a], (16, 16))
    assert opposite.shape == (2, 16, 16) and torch.allclose(opposite, torch.full_like(opposite, 4.0))


def test_patches_stitch_back_exactly():
    images = torch.randn(2, 3, 64, 128)
    tiles = split_tiles(images, 2, 4)
    assert tiles.shape == (16, 3, 32, 32) and torch.equal(tiles[5], images[0, :, 32:64, 32:64])
    assert torch.equal(stitch_tiles(tiles, 2, 4), images)
    # the tiled network's map = the per-tile maps of the untiled network, placed side by side, then smoothed
    tiled = RD4ADNetwork("resnet18", None, 0, rows=2, columns=2).eval()
    plain = RD4ADNetwork("resnet18", None, 0).eval()
    plain.load_state_dict(tiled.state_dict())
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps, scores = tiled(images)
        quarters = [plain.distill(images[..., r:r + 32, c:c + 32]) for r in (0, 32) for c in (0, 32)]
    raw = [cosine_distance_map(t, s, (32, 32))[0] for t, s in quarters]
    expected = gaussian_blur(torch.cat([torch.cat(raw[:2], 1), torch.cat(raw[2:], 1)], 0)[None])
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"96 \(width\)"):
        RD4AD("resnet18", weights=None, tile_columns=3).network(torch.zeros(1, 3, 64, 64))


def test_resume_continues_from_the_saved_epoch(washer32, tmp_path):
    first = RD4AD(**TINY, epochs=2, checkpoint_dir=str(tmp_path), checkpoint_every=1).fit(washer32, progress=False)
    checkpoint = tmp_path / "washer" / CHECKPOINT_FILE
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    stats = json.loads((tmp_path / "washer" / "training_stats.json").read_text())
    assert stats["epochs"] == 2 and stats["image_scores"]["n"] == 8 and stats["image_scores"]["source"] == "train"
    # nothing left to do: the weights are the checkpoint's, bit for bit
    same = RD4AD(**TINY, epochs=2, checkpoint_dir=str(tmp_path), resume=True).fit(washer32, progress=False)
    assert same.losses_ == first.losses_
    for name, tensor in first.learned_tensors().items():
        assert torch.equal(tensor, same.learned_tensors()[name]), name
    longer = RD4AD(**TINY, epochs=3, checkpoint_dir=str(tmp_path), resume=True).fit(washer32, progress=False)
    assert len(longer.losses_) == 3 and longer.losses_[:2] == first.losses_
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 3


def test_calibration_holdout_and_rule(washer32, fitted32):
    stats = fitted32.score_statistics_
    borderline, scale = fitted32.calibration()
    assert borderline == pytest.approx(stats["mean"] + 3 * stats["std"]) and scale == pytest.approx(stats["std"])
    calibrated = fitted32.calibrated_scores(np.array([stats["mean"], borderline, stats["mean"] + 6 * scale]))
    np.testing.assert_allclose(calibrated, [0.0474, 0.5, 0.9526], atol=1e-4)
    held = RD4AD(**TINY, epochs=1, calibration_holdout=0.25).fit(washer32, progress=False)
    assert held.score_statistics_["n"] == 2 and held.score_statistics_["source"] == "holdout"
    with pytest.raises(ValueError, match="calibration_holdout"):
        RD4AD(**TINY, calibration_holdout=1.0).fit(washer32, progress=False)


def test_save_load_and_errors(fitted32, tmp_path, synthetic_root):
    path = fitted32.save(tmp_path / "model")
    loaded = load_model(path)
    assert isinstance(loaded, RD4AD)
    assert loaded.get_config() == json.loads(json.dumps(fitted32.get_config()))  # betas come back as a list
    images = torch.stack([load_dataset(synthetic_root, "washer", "test", resize=32, imagesize=32)[i]["image"]
                          for i in (0, 14)])
    before, after = fitted32.predict(images), loaded.predict(images)
    np.testing.assert_array_equal(before.image_scores, after.image_scores)
    np.testing.assert_array_equal(before.anomaly_maps, after.anomaly_maps)
    assert loaded.score_statistics_ == fitted32.score_statistics_
    with pytest.raises(RuntimeError, match="not fitted"):
        RD4AD(**TINY).predict(images)
    with pytest.raises(ValueError, match="multiples of 32"):
        RD4AD(**TINY).fit(load_dataset(synthetic_root, "washer", "train", resize=48, imagesize=48), progress=False)
    with pytest.raises(ValueError, match="no student decoder|Unknown backbone"):
        _ = RD4AD(backbone="vit", weights=None).network


def test_predictions_keep_raw_and_calibrated_scores(fitted32, synthetic_root, tmp_path):
    test = load_dataset(synthetic_root, "washer", "test", resize=32, imagesize=32)
    predictions, _ = evaluate(fitted32, test, progress=False)
    np.testing.assert_allclose(predictions.calibrated_scores, fitted32.calibrated_scores(predictions.image_scores))
    loaded = Predictions.load(predictions.save(tmp_path / "with.npz"))
    np.testing.assert_array_equal(loaded.calibrated_scores, predictions.calibrated_scores)
    predictions.calibrated_scores = None  # a method without calibration, or a file written before the field
    assert Predictions.load(predictions.save(tmp_path / "without.npz")).calibrated_scores is None


@pytest.mark.slow
def test_few_epochs_beat_chance_and_calibrate_the_train_set_near_zero(synthetic_root):
    """Real EfficientNet-Lite0 teacher, 64 px, 3 epochs: image AUROC clearly above 0.5 on two categories."""
    aurocs = []
    for category in ("capsule", "weave"):
        train = load_dataset(synthetic_root, category, "train", resize=64, imagesize=64)
        test = load_dataset(synthetic_root, category, "test", resize=64, imagesize=64)
        model = RD4AD("efficientnet_lite0", weights="imagenet", epochs=3, batch_size=8).fit(train, progress=False)
        assert model.losses_[-1] < model.losses_[0]
        predictions, metrics = evaluate(model, test, progress=False)
        aurocs.append(metrics["instance_auroc"])
        train_calibrated = model.calibrated_scores(evaluate(model, train, progress=False)[0].image_scores)
        assert np.median(train_calibrated) < 0.1 and train_calibrated.mean() < 0.15
        labels = predictions.labels.astype(bool)
        assert predictions.calibrated_scores[labels].mean() > predictions.calibrated_scores[~labels].mean()
    assert min(aurocs) > 0.65, aurocs


@pytest.mark.slow
def test_cli_train_evaluate_fps_export(synthetic_root, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    result = main(["rd4ad", "train", str(tmp_path / "runs"), "--data_path", str(synthetic_root), "-d", "washer",
                   "--resize", "64", "--imagesize", "64", "-b", "mobilenet_v2", "--weights", "none",
                   "--epochs", "1", "--batch_size", "8", "--patches_per_row", "2", "--save_model",
                   "--checkpoint_dir", str(checkpoints), "--checkpoint_every", "1"])
    run = Path(result["output"])
    assert (checkpoints / "washer" / CHECKPOINT_FILE).is_file()
    assert (checkpoints / "washer" / "training_stats.json").is_file()
    predictions = Predictions.load(run / "predictions" / "mvtec_washer.npz")
    assert predictions.anomaly_maps.shape == (25, 64, 64) and predictions.calibrated_scores.shape == (25,)
    model_path = run / "models" / "mvtec_washer"
    assert load_model(model_path).tile_columns == 2

    evaluated = main(["rd4ad", "evaluate", str(tmp_path / "evaluated"), "--model_path", str(model_path), "-d", "washer",
                      "--data_path", str(synthetic_root), "--resize", "64", "--imagesize", "64"])
    assert evaluated["results"]["mvtec_washer"]["instance_auroc"] == result["results"]["mvtec_washer"]["instance_auroc"]

    fps = main(["rd4ad", "fps", "--model_path", str(model_path), "--batch_size", "2", "--warmup", "1",
                "--iterations", "2", "--device", "cpu"])
    assert fps["images_per_second"] > 0 and fps["image_size"] == [64, 64] and fps["device"] == "cpu"

    exported = main(["rd4ad", "export", str(model_path), str(tmp_path / "model_repository")])
    folder = tmp_path / "model_repository" / "rd4ad"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "1/model.onnx", "1/training_stats.json", "config.pbtxt"]
    config = (folder / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "dims: [ 3, 64, 64 ]" in config
    assert max(exported["max_abs_difference"].values()) < 1e-4
    model = load_model(model_path, device="cpu")
    images = torch.stack([load_dataset(synthetic_root, "washer", "test", resize=64, imagesize=64)[i]["image"]
                          for i in range(5)])  # a batch size the export never saw
    assert max(onnx_difference(model, folder / "1" / "model.onnx", images).values()) < 1e-4
    with pytest.raises(FileExistsError, match="overwrite"):
        main(["rd4ad", "export", str(model_path), str(tmp_path / "model_repository")])


@pytest.mark.slow
def test_notebook_runs_at_ci_size(run_notebook):
    notebook = run_notebook("08_rd4ad", backbone="efficientnet_lite0", weights="imagenet", image_size=64, resize=64,
                            categories=["washer", "tile"], epochs=1, batch_size=8, sampler_percentage=0.1,
                            fps_batch_size=2, large_image_size=128)
    output_dir = Path(notebook.metadata["output_dir"])
    for figure in ("08_training_loss.png", "08_rd4ad_vs_patchcore.png", "08_calibrated_scores.png",
                   "08_sliding_window.png"):
        path = output_dir / "figures" / figure
        assert path.is_file() and path.stat().st_size > 5000, figure
    text = "\n".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "✓ your calibrated scores match" in text and "✗" not in text
    assert "images/s" in text
    assert (output_dir / "rd4ad" / "checkpoints" / "patches" / "washer" / "last.pt").is_file()
    results = read_results_csv(output_dir / "rd4ad" / "run" / "results.csv")
    assert list(results.index) == ["mvtec_washer", "mvtec_tile", "Mean"]
