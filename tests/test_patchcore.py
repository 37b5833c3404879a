
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workshop_lib.data import load_dataset
from workshop_lib.errors import ModelFileError
from workshop_lib.evaluation import evaluate
from workshop_lib.models import PatchCore, load_model
from workshop_lib.models.components.coreset import greedy_coreset_indices
from workshop_lib.models.patchcore import average_pool, neighbourhood_pool

TINY = {"backbone": "resnet18", "weights": None, "pretrain_embed_dimension": 64, "target_embed_dimension": 32}


@pytest.fixture(scope="module")
def washer(synthetic_root):
    train = load_dataset(synthetic_root, "washer", "train", resize=64, imagesize=64)
    test = load_dataset(synthetic_root, "washer", "test", resize=64, imagesize=64)
    return train, test


def test_coreset_spreads_over_clusters_and_is_deterministic():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0] * 8, [50.0] * 8, [-50.0] + [0.0] * 7])
    points = torch.cat([c + torch.randn(200, 8, generator=generator) for c in centers])
    chosen = greedy_coreset_indices(points, 3, seed=0, progress=False)
    assert sorted((chosen // 200).tolist()) == [0, 1, 2]  # one point per cluster
    assert torch.equal(chosen, greedy_coreset_indices(points, 3, seed=0, progress=False))
    many = greedy_coreset_indices(torch.randn(500, 256), 50, seed=1, progress=False)
    assert len(set(many.tolist())) == 50


def test_embedding_shapes(washer):
    model = PatchCore(**TINY)
    features, grid = model.embed(torch.stack([washer[0][i]["image"] for i in range(2)]))
    assert grid == (8, 8) and features.shape == (2 * 8 * 8, 32)


def test_k_nearest_neighbours_are_used(washer):
    train, test = washer
    model = PatchCore(**TINY, coreset_ratio=1.0, num_neighbors=3).fit(train, progress=False)
    images = torch.stack([test[i]["image"] for i in (0, len(test) - 1)])
    features, _ = model.embed(images)
    squared = torch.cdist(features, model.memory_bank_) ** 2
    expected = squared.topk(3, largest=False).values.mean(1).reshape(2, -1).max(1).values
    output = model.predict(images)
    np.testing.assert_allclose(output.image_scores, expected.numpy(), rtol=1e-3)
    k1 = PatchCore(**TINY, coreset_ratio=1.0, num_neighbors=1).fit(train, progress=False).predict(images)
    assert np.all(k1.image_scores < output.image_scores)
    assert output.anomaly_maps.shape == (2, 64, 64)


def test_reweighting_damps_scores(washer):
    train, test = washer
    images = torch.stack([test[i]["image"] for i in range(4)])
    plain = PatchCore(**TINY, coreset_ratio=0.2).fit(train, progress=False)
    weighted = PatchCore(**TINY, coreset_ratio=0.2, reweight=True).fit(train, progress=False)
    a, b = plain.predict(images).image_scores, weighted.predict(images).image_scores
    assert np.all(np.isfinite(b)) and np.all(b < a) and np.all(b > 0)


def test_save_load_gives_identical_scores(washer, tmp_path):
    train, test = washer
    model = PatchCore(**TINY, coreset_ratio=0.1).fit(train, progress=False)
    path = model.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "tensors.safetensors"]
    loaded = load_model(path)
    assert isinstance(loaded, PatchCore) and loaded.get_config() == {**model.get_config(), "layers": None}
    images = torch.stack([test[i]["image"] for i in range(3)])
    before, after = model.predict(images), loaded.predict(images)
    np.testing.assert_array_equal(before.image_scores, after.image_scores)
    np.testing.assert_array_equal(before.anomaly_maps, after.anomaly_maps)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(path)
    model.save(path, overwrite=True)


def test_errors_are_clear(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        PatchCore(**TINY).predict(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ModelFileError, match="not a saved model folder"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCore(**TINY, coreset_ratio=0).embed(torch.zeros(1, 3, 64, 64))


@pytest.mark.slow
def test_imagenet_features_beat_random_features(synthetic_root):
    """Issue 11: real EfficientNet-Lite0 features reach image AUROC >= 0.95 on the synthetic data (mean of all
    five categories, 192 px), clearly above the same network with random weights."""
    means = {}
    for weights in ("imagenet", None):
        aurocs = []
        for category in ("weave", "wood", "tile", "washer", "capsule"):
            train = load_dataset(synthetic_root, category, "train", resize=192, imagesize=192)
            test = load_dataset(synthetic_root, category, "test", resize=192, imagesize=192)
            model = PatchCore("efficientnet_lite0", weights=weights, coreset_ratio=0.25).fit(train, progress=False)
            aurocs.append(evaluate(model, test, progress=False)[1]["instance_auroc"])
        means[weights] = float(np.mean(aurocs))
    assert means["imagenet"] >= 0.95
    assert means["imagenet"] - means[None] >= 0.2


@pytest.mark.parametrize(("channels", "dim", "patchsize"), [(8, 16, 3), (16, 16, 3), (6, 16, 3), (4, 32, 5)])
def test_neighbourhood_pool_equals_unfold_then_adaptive_pooling(channels, dim, patchsize):
    """Upstream's formula (unfold, flatten, adaptive-average-pool) against the grouped-convolution shortcut."""
    fmap = torch.randn(2, channels, 7, 9)
    unfolded = F.unfold(fmap, patchsize, padding=patchsize // 2).transpose(1, 2).reshape(2 * 7 * 9, 1, -1)
    expected = F.adaptive_avg_pool1d(unfolded, dim).reshape(2, 7, 9, dim).permute(0, 3, 1, 2)
    torch.testing.assert_close(neighbourhood_pool(fmap, patchsize, dim), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("length", "dim"), [(2048, 1024), (3072, 1024), (1000, 300), (54, 16)])
def test_average_pool_equals_adaptive_average_pooling(length, dim):
    vectors = torch.randn(5, length)
    expected = F.adaptive_avg_pool1d(vectors.unsqueeze(1), dim).squeeze(1)
    torch.testing.assert_close(average_pool(vectors, dim), expected, rtol=1e-5, atol=1e-6)


def test_no_projection_keeps_every_channel_as_anomalib(washer):
    """Both dimensions None: each layer's channels averaged over the 3 x 3 neighbourhood (zero padding counted, as
    torch's AvgPool2d(3, 1, 1)), deeper layers bilinearly upsampled, concatenated: anomalib's embedding."""
    model = PatchCore(**{**TINY, "pretrain_embed_dimension": None, "target_embed_dimension": None})
    images = torch.stack([washer[0][i]["image"] for i in range(2)])
    features, grid = model.embed(images)
    layer2, layer3 = model.extractor(images)
    expected = torch.cat([F.avg_pool2d(layer2, 3, 1, 1),
                          F.interpolate(F.avg_pool2d(layer3, 3, 1, 1), size=grid, mode="bilinear")], dim=1)
    assert features.shape == (2 * 8 * 8, 128 + 256)
    torch.testing.assert_close(features, expected.permute(0, 2, 3, 1).reshape(-1, 384), rtol=1e-5, atol=1e-6)
    # a projection at one stage only: each layer keeps its channels, then the concatenation is pooled
    pooled, _ = PatchCore(**{**TINY, "pretrain_embed_dimension": None, "target_embed_dimension": 96}).embed(images)
    torch.testing.assert_close(pooled, average_pool(features, 96), rtol=1e-5, atol=1e-6)
