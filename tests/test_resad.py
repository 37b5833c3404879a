import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import train_subset
from torch.utils.data import ConcatDataset, Subset

from workshop_lib.cli import main
from workshop_lib.data import load_dataset
from workshop_lib.data.references import category_indices, reference_images, reference_indices
from workshop_lib.errors import UsageError
from workshop_lib.models import ResAD, load_model
from workshop_lib.models.resad import (
    build_flow,
    flow_log_likelihood,
    flow_loss,
    hypersphere_loss,
    match_references,
    position_encoding,
    residual_features,
)
from workshop_lib.predictions import read_results_csv
from workshop_lib.studies.shots import evaluate_shots
from workshop_lib.training import CHECKPOINT_FILE

SEEN, UNSEEN = ("weave", "wood", "washer"), ("tile", "capsule")
# CI size: real ImageNet features (bundled EfficientNet-Lite0), 64 px, 2 couplings, a few epochs.
TINY = {"backbone": "efficientnet_lite0", "weights": "imagenet", "coupling_layers": 2, "pos_embed_dim": 16,
        "batch_size": 8, "lr": 1e-3, "train_shots": 2, "seed": 0}


def seen_train(root: Path, size: int = 64, per_class: int | None = None) -> ConcatDataset:
    parts = []
    for category in SEEN:
        if per_class is None:
            parts.append(load_dataset(root, category, "train", resize=size, imagesize=size))
        else:
            parts.append(train_subset(root, category, per_class, size))
    return ConcatDataset(parts)


@pytest.fixture(scope="module")
def fitted(synthetic_root):
    """The tiny configuration trained on the seen synthetic classes (a few seconds)."""
    return ResAD(**TINY, epochs=5).fit(seen_train(synthetic_root), progress=False)


@pytest.fixture(scope="module")
def tile_test(synthetic_root):
    return load_dataset(synthetic_root, "tile", "test", resize=64, imagesize=64)


def trainable_levels(model: ResAD) -> list[list[torch.Tensor]]:
    """Per level, copies of the trainable parameters of its flow and of its constraintor."""
    head = model.head
    return [[p.detach().clone() for p in (*flow.parameters(), *conv.parameters()) if p.requires_grad]
            for flow, conv in zip(head.flows, head.constraintor, strict=True)]


def test_residuals_match_the_cosine_nearest_reference():
    # Two positions; references: r0 is L2-closest to position 0 but points elsewhere, r1 has its direction.
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)  # positions (1, 0) and (0, 2)
    references = torch.tensor([[0.6, 0.7], [3.0, 0.1], [0.0, 0.5]])
    matched = match_references(features, references)
    assert torch.equal(matched[0, :, 0, 0], references[1])  # cos-nearest to (1, 0), though r0 is L2-nearer
    assert torch.equal(matched[0, :, 0, 1], references[2])
    assert torch.allclose(residual_features(features, matched, "difference")[0, :, 0, 0], torch.tensor([-2.0, -0.1]))
    assert torch.allclose(residual_features(features, matched)[0, :, 0, 0], torch.tensor([4.0, 0.01]))
    assert torch.allclose(residual_features(features, matched)[0, :, 0, 1], torch.tensor([0.0, 2.25]))
    # A feature that is in the references has a zero residual: normal patches give small residuals.
    assert torch.equal(residual_features(references.T.reshape(1, 2, 1, 3),
                                         match_references(references.T.reshape(1, 2, 1, 3), references)),
                       torch.zeros(1, 2, 1, 3))
    with pytest.raises(ValueError, match="residual must be"):
        residual_features(features, matched, "ratio")


def test_position_encoding_and_hypersphere_loss():
    encoding = position_encoding(8, height=3, width=5)
    assert encoding.shape == (15, 8)
    row, column = 2, 4
    x_part, y_part = encoding[row * 5 + column, :4], encoding[row * 5 + column, 4:]
    frequencies = torch.tensor([1.0, 1e4 ** (-2 / 4)])
    expected_x = torch.stack([torch.sin(column * frequencies), torch.cos(column * frequencies)], dim=1).flatten()
    expected_y = torch.stack([torch.sin(row * frequencies), torch.cos(row * frequencies)], dim=1).flatten()
    assert torch.allclose(x_part, expected_x) and torch.allclose(y_part, expected_y)
    with pytest.raises(ValueError, match="multiple of 4"):
        position_encoding(6, 2, 2)
    # Pseudo-radius sqrt(||e|| + 1) - 1: a norm of 0.96 is radius 0.4, inside the shell [0.396, 0.4].
    inside = torch.tensor([[0.96, 0.0]])
    assert hypersphere_loss(inside).item() == 0.0
    far, near = torch.tensor([[5.0, 0.0]], requires_grad=True), torch.tensor([[0.1, 0.0]], requires_grad=True)
    hypersphere_loss(far).backward()
    hypersphere_loss(near).backward()
    assert far.grad[0, 0] > 0 and near.grad[0, 0] < 0  # descent pulls both onto the shell
    assert hypersphere_loss(far).item() > hypersphere_loss(torch.tensor([[2.0, 0.0]])).item() > 0


def test_flow_likelihood_is_finite_and_higher_for_training_like_features():
    torch.manual_seed(0)
    flow = build_flow(8, cond_dim=4, coupling_layers=2, clamp_alpha=1.9)
    condition = position_encoding(4, 8, 8)
    normal = lambda n: 0.5 + 0.1 * torch.randn(n, 8)  # noqa: E731
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(150):
        loss = flow_loss(flow_log_likelihood(flow, normal(64), condition))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        typical = flow_log_likelihood(flow, normal(64), condition)
        shifted = flow_log_likelihood(flow, normal(64) + 1.0, condition)
    assert torch.isfinite(typical).all() and torch.isfinite(shifted).all()
    assert typical.mean() > shifted.mean() + 1.0
    assert (typical.median() > shifted).float().mean() > 0.95


@pytest.mark.parametrize("flow_chunk", [1_000_000, 16])
def test_every_flow_level_trains_whatever_the_chunk_size(synthetic_root, flow_chunk):
    # Upstream takes bs*h*w // 8192 steps per level: a level with fewer positions than a chunk never trained.
    model = ResAD(**TINY, epochs=1, flow_chunk=flow_chunk)
    train = seen_train(synthetic_root, per_class=4)
    before = trainable_levels(model)
    model.fit(train, progress=False)
    after = trainable_levels(model)
    positions = [16 * 16 * TINY["batch_size"], 8 * 8 * TINY["batch_size"], 4 * 4 * TINY["batch_size"]]
    assert flow_chunk > max(positions) or flow_chunk < min(positions)
    for level, (old, new) in enumerate(zip(before, after, strict=True)):
        changed = [not torch.equal(a, b) for a, b in zip(old, new, strict=True)]
        assert all(changed), f"level {level}: {changed.count(False)} of {len(changed)} parameters never changed"


def test_tiny_configuration_beats_chance_on_unseen_classes(fitted, synthetic_root, tmp_path):
    assert fitted.seen_classes_ == sorted(SEEN)
    assert len(fitted.losses_) == 5 and fitted.losses_[-1] < fitted.losses_[0]
    table = evaluate_shots(fitted, synthetic_root, UNSEEN, shots=(2, 4), resize=64, imagesize=64,
                           output=tmp_path, progress=False)
    assert len(table) == 4 and not table.duplicated(["category", "shots"]).any()
    assert set(table["shots"]) == {2, 4} and set(table["category"]) == set(UNSEEN)
    assert table["instance_auroc"].mean() > 0.7, table
    assert table["full_pixel_auroc"].mean() > 0.75, table
    assert np.isfinite(table[["full_pro", "anomaly_pixel_auroc"]].to_numpy()).all()
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == [
        "mvtec_capsule_2shot.npz", "mvtec_capsule_4shot.npz", "mvtec_tile_2shot.npz", "mvtec_tile_4shot.npz"]
    # References are extracted once per class (4 shots) and kept per level.
    assert sorted(p.name for p in (tmp_path / "references").iterdir()) == ["mvtec_capsule.safetensors",
                                                                          "mvtec_tile.safetensors"]
    assert [len(level) for level in fitted.references_["tile"]] == [4, 4, 4]
    with pytest.raises(ValueError, match="seen"):
        evaluate_shots(fitted, synthetic_root, ["wood"], shots=(2,), resize=64, imagesize=64, progress=False)


def test_no_test_set_statistic_enters_a_score(fitted, synthetic_root, tile_test):
    fitted.add_references("tile", reference_images(synthetic_root, "tile", 2, resize=64, imagesize=64))
    images = torch.stack([tile_test[i]["image"] for i in range(len(tile_test))])
    together = fitted.use_references("tile", 2).predict(images)
    alone = [fitted.predict(images[i: i + 1]) for i in (0, len(images) - 1)]
    subset = fitted.predict(images[:3])
    np.testing.assert_allclose(alone[0].image_scores, together.image_scores[:1], rtol=1e-5)
    np.testing.assert_allclose(alone[1].anomaly_maps[0], together.anomaly_maps[-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(subset.image_scores, together.image_scores[:3], rtol=1e-5)
    # Levels are standardised with the training images' NLL statistics, learned once in fit.
    stats = fitted.nll_statistics_
    assert len(stats["mean"]) == len(stats["std"]) == 3 and min(stats["std"]) > 0


def test_references_are_deterministic_nested_and_can_come_from_a_folder(synthetic_root, tmp_path):
    assert reference_indices(30, 8, seed=0)[:2] == reference_indices(30, 2, seed=0)
    assert reference_indices(30, 4, seed=0) == reference_indices(30, 4, seed=0) != reference_indices(30, 4, seed=1)
    with pytest.raises(ValueError, match="only 3 normal images"):
        reference_indices(3, 4)
    picked = reference_images(synthetic_root, "tile", 4, resize=64, imagesize=64)
    assert len({r.path for r in picked.records}) == 4
    folder = tmp_path / "refs" / "tile"
    folder.mkdir(parents=True)
    for record in picked.records[:3]:
        (folder / record.path.name).write_bytes(record.path.read_bytes())
    given = reference_images(synthetic_root, "tile", 2, resize=64, imagesize=64, reference_dir=tmp_path / "refs")
    assert [r.path.name for r in given.records] == sorted(r.path.name for r in picked.records[:3])[:2]
    with pytest.raises(ValueError, match="fewer than the 4"):
        reference_images(synthetic_root, "tile", 4, reference_dir=tmp_path / "refs")
    with pytest.raises(FileNotFoundError, match="capsule"):
        reference_images(synthetic_root, "capsule", 2, reference_dir=tmp_path / "refs")
    train = seen_train(synthetic_root, per_class=3)
    groups = category_indices(train)
    assert groups == {"weave": [0, 1, 2], "wood": [3, 4, 5], "washer": [6, 7, 8]}
    assert category_indices(Subset(train, [8, 0, 4])) == {"weave": [1], "wood": [2], "washer": [0]}


def test_save_load_references_and_errors(fitted, synthetic_root, tile_test, tmp_path):
    fitted.add_references("tile", reference_images(synthetic_root, "tile", 4, resize=64, imagesize=64))
    fitted.add_references("capsule", reference_images(synthetic_root, "capsule", 2, resize=64, imagesize=64))
    fitted._selected = None
    images = torch.stack([tile_test[i]["image"] for i in range(4)])
    with pytest.raises(RuntimeError, match="use_references"):
        fitted.predict(images)
    with pytest.raises(ValueError, match="cannot use 3 shots"):
        fitted.use_references("capsule", 3)
    with pytest.raises(KeyError, match="add_references"):
        fitted.use_references("screw")
    expected = fitted.use_references("tile", 4).predict(images)
    folder = fitted.save(tmp_path / "model")
    with pytest.raises(FileExistsError):
        fitted.save(tmp_path / "model")
    loaded = load_model(folder)
    assert isinstance(loaded, ResAD) and loaded.seen_classes_ == sorted(SEEN)
    assert sorted(loaded.references_) == ["capsule", "tile"]
    np.testing.assert_allclose(loaded.use_references("tile", 4).predict(images).anomaly_maps, expected.anomaly_maps,
                               rtol=1e-5, atol=1e-6)
    # Reference features on disk, one file per class; a file from another encoder is refused.
    path = fitted.save_references("tile", tmp_path / "tile.safetensors")
    fresh = load_model(folder)
    del fresh.references_["tile"]
    assert fresh.load_references(path) == "tile" and len(fresh.references_["tile"][0]) == 4
    other = ResAD(**{**TINY, "backbone": "resnet18", "weights": None}, epochs=0).fit(
        seen_train(synthetic_root, 64, per_class=2), progress=False)
    with pytest.raises(ValueError, match="resnet18"):
        other.load_references(path)
    with pytest.raises(RuntimeError, match="not fitted"):
        ResAD(**TINY).add_references("tile", reference_images(synthetic_root, "tile", 2, resize=64, imagesize=64))
    with pytest.raises(ValueError, match="fewer than 2 training images"):
        ResAD(**TINY).fit(seen_train(synthetic_root, per_class=1), progress=False)


def test_checkpoints_are_saved_and_resume_continues(synthetic_root, tmp_path):
    train = seen_train(synthetic_root, per_class=4)
    first = ResAD(**TINY, epochs=2, checkpoint_dir=str(tmp_path), checkpoint_every=1).fit(train, progress=False)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == 2 and state["losses"] == first.losses_
    resumed = ResAD(**TINY, epochs=3, checkpoint_dir=str(tmp_path), resume=True).fit(train, progress=False)
    assert len(resumed.losses_) == 3 and resumed.losses_[:2] == first.losses_
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["epoch"] == 3


@pytest.mark.slow
def test_cli_trains_on_seen_and_evaluates_unseen_at_every_shot(synthetic_root, tmp_path):
    common = ["--data_path", str(synthetic_root), "--resize", "64", "--imagesize", "64", "--batch_size", "8"]
    result = main(["resad", "train", str(tmp_path), *common, "-d", "weave", "-d", "washer", "-t", "tile",
                   "-t", "capsule", "--shots", "2", "4", "6", "8", "-b", "efficientnet_lite0", "--epochs", "2",
                   "--lr", "1e-3", "--train_shots", "2", "--coupling_layers", "2", "--pos_embed_dim", "16",
                   "--save_model", "--log_project", "resad", "--log_group", "cli"])
    run = result["output"]
    table = pd.read_csv(run / "multishot.csv")
    assert len(table) == 8 and sorted(table.groupby("category")["shots"].apply(list)["tile"]) == [2, 4, 6, 8]
    assert list(table.columns[:4]) == ["method", "test_dataset", "category", "shots"]
    results = read_results_csv(run / "results.csv")
    assert "mvtec_tile_8shot" in results.index and "Mean" in results.index
    assert (run / "checkpoints" / CHECKPOINT_FILE).is_file()  # a checkpoint by default (upstream never saved one)
    assert json.loads((run / "fit_seconds.json").read_text())["resad_custom"] > 0
    model = run / "models" / "resad_custom"
    evaluated = main(["resad", "evaluate", str(tmp_path / "evaluated"), *common, "-d", "tile",
                      "--model_path", str(model), "--shots", "2"])
    again = evaluated["results"].iloc[0]
    first = table[(table.category == "tile") & (table.shots == 2)].iloc[0]
    assert again["instance_auroc"] == pytest.approx(first["instance_auroc"])
    assert again["full_pixel_auroc"] == pytest.approx(first["full_pixel_auroc"], rel=1e-5)
    with pytest.raises(UsageError, match="never seen"):
        main(["resad", "train", str(tmp_path), *common, "-d", "weave", "-t", "weave"])
    with pytest.raises(UsageError, match="--setting custom"):
        main(["resad", "train", str(tmp_path), *common, "-d", "all", "--setting", "mvtec_to_visa",
              "--dataset", "btad"])
    with pytest.raises(ValueError, match="seen"):
        main(["resad", "evaluate", str(tmp_path / "bad"), *common, "-d", "weave", "--model_path", str(model)])


@pytest.mark.slow
def test_notebook_runs_at_ci_size(run_notebook):
    notebook = run_notebook("10_resad_class_generalization", backbone="efficientnet_lite0", weights="imagenet",
                            image_size=64, resize=64, categories=[*SEEN, *UNSEEN], unseen_categories=list(UNSEEN),
                            shots=[2, 4], epochs=3, batch_size=8, lr=1e-3, train_shots=2, coupling_layers=2,
                            pos_embed_dim=16)
    output_dir = Path(notebook.metadata["output_dir"])
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "✓ your residuals match the library's" in printed and "✗" not in printed
    table = pd.read_csv(output_dir / "10_multishot.csv")
    assert set(table["method"]) == {"ResAD", "PatchCore"} and len(table) == 8
    assert set(table.loc[table["method"] == "ResAD", "test_dataset"]) == {"synthetic"}
    for figure in ("10_residuals.png", "10_training_loss.png", "10_auroc_vs_shots.png",
                   "10_classwise_pixel_auroc.png"):
        path = output_dir / "figures" / figure
        assert path.is_file() and path.stat().st_size > 5000
