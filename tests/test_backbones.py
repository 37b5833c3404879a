import pytest
import skimage.data
import torch
from PIL import Image

from workshop_lib.backbones import (
    BACKBONES,
    MAE_VIT_BASE,
    FeatureExtractor,
    backbone_spec,
    build_network,
    remap_in_order,
    weights_table,
)
from workshop_lib.cli import main
from workshop_lib.data.transforms import image_transform
from workshop_lib.errors import WeightsUnavailableError

EXPECTED = {  # (channels, strides) of the default PatchCore layers
    "wide_resnet50_2": ([512, 1024], [8, 16]),
    "resnet18": ([128, 256], [8, 16]),
    "mobilenet_v2": ([32, 96], [8, 16]),
    "efficientnet_lite0": ([40, 112], [8, 16]),
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_feature_shapes_match_documented_strides(name):
    extractor = FeatureExtractor(name, weights=None)
    maps = extractor(torch.zeros(1, 3, 64, 64))
    assert (extractor.channels, extractor.strides) == EXPECTED[name]
    assert [tuple(m.shape) for m in maps] == [(1, c, 64 // s, 64 // s) for c, s in zip(*EXPECTED[name], strict=True)]
    assert not any(p.requires_grad for p in extractor.parameters())


def test_layer_order_is_kept_and_bad_names_are_clear():
    extractor = FeatureExtractor("resnet18", ["layer3", "layer1"], weights=None)
    assert [m.shape[1] for m in extractor(torch.zeros(1, 3, 64, 64))] == [256, 64]
    with pytest.raises(ValueError, match="no layer .*layer9"):
        FeatureExtractor("resnet18", ["layer9"], weights=None)
    with pytest.raises(ValueError, match="Unknown backbone 'vgg99'"):
        backbone_spec("vgg99")
    assert backbone_spec("wideresnet50").name == "wide_resnet50_2"  # upstream's name still works


def test_random_init_is_reproducible_and_keeps_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = FeatureExtractor("resnet18", weights=None, seed=5)
    assert torch.rand(1) == before  # building did not consume the caller's random numbers
    b = FeatureExtractor("resnet18", weights=None, seed=5)
    c = FeatureExtractor("resnet18", weights=None, seed=6)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(a(x)[0], b(x)[0]) and not torch.equal(a(x)[0], c(x)[0])


def test_local_weights_file(tmp_path):
    source = build_network(backbone_spec("resnet18"), None, seed=3)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "resnet18.pth")
    loaded = FeatureExtractor("resnet18", weights=tmp_path / "resnet18.pth", seed=0)
    reference = FeatureExtractor("resnet18", weights=None, seed=3)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(x)[1], reference(x)[1])
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        FeatureExtractor("wide_resnet50_2", weights=tmp_path / "resnet18.pth")
    with pytest.raises(WeightsUnavailableError, match="not found"):
        FeatureExtractor("resnet18", weights=tmp_path / "missing.pth")


def test_download_only_weights_fail_clearly_offline():
    with pytest.raises(WeightsUnavailableError, match="weights fetch resnet18"):
        FeatureExtractor("resnet18", weights="imagenet")


def test_bundled_checkpoint_mapping_is_checked(tmp_path):
    target = {"a": torch.zeros(2), "b": torch.zeros(3)}
    with pytest.raises(WeightsUnavailableError, match="has 1 tensors but 2"):
        remap_in_order({"x": torch.zeros(2)}, target, tmp_path / "f.pth")
    with pytest.raises(WeightsUnavailableError, match=r"tensor y \(4,\) does not match b"):
        remap_in_order({"x": torch.zeros(2), "y": torch.zeros(4)}, target, tmp_path / "f.pth")


def test_weights_list_shows_bundled_efficientnet_available(capsys):
    rows = {row["backbone"]: row for row in weights_table()}
    assert rows["efficientnet_lite0"]["available"] is True
    assert rows["efficientnet_lite0"]["source"].startswith("bundled")
    main(["weights", "list"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("efficientnet_lite0"))
    assert "available" in line


# ImageNet class indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso; 657 missile, 744 projectile.
@pytest.mark.parametrize("photo, classes", [("chelsea", {281, 282, 285}), ("coffee", {967}),
                                            ("rocket", {657, 744})])
def test_bundled_efficientnet_classifies_sample_photos(photo, classes):
    network = build_network(backbone_spec("efficientnet_lite0"), "imagenet", seed=0).eval()
    image = image_transform(256, 224)(Image.fromarray(getattr(skimage.data, photo)()))
    with torch.no_grad():
        top5 = set(network(image[None]).topk(5).indices[0].tolist())
    assert classes <= top5


def test_mmr_student_weights_are_listed_and_fail_clearly_offline():
    rows = {row["backbone"]: row for row in weights_table()}
    assert rows[MAE_VIT_BASE]["source"].startswith("MMR student")
    if not rows[MAE_VIT_BASE]["available"]:  # the usual case here: never downloaded, and the hub is offline
        assert "weights fetch vit_base_patch16_224.mae" in rows[MAE_VIT_BASE]["location"]
        with pytest.raises(WeightsUnavailableError, match="Could not download vit_base_patch16_224.mae"):
            main(["weights", "fetch", MAE_VIT_BASE])
