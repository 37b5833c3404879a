import csv
import hashlib

import numpy as np
import pytest
import torch
from helpers import make_mvtec_category, write_image, write_mask
from PIL import Image

from workshop_lib.data import (
    discover_records,
    list_categories,
    load_dataset,
    make_synthetic_aebad,
    make_synthetic_dataset,
)
from workshop_lib.data.synthetic import CATEGORIES, DEFECTS, DOMAIN_SHIFTS, TRAIN_DOMAINS, shift_domain
from workshop_lib.errors import DatasetError


def tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_synthetic_dataset_is_deterministic_by_seed(tmp_path):
    kwargs = {"categories": ("tile", "washer"), "n_train": 3, "n_test_good": 2, "n_test_defect": 1,
              "image_size": 48}
    first = make_synthetic_dataset(tmp_path / "a", seed=1, **kwargs)
    second = make_synthetic_dataset(tmp_path / "b", seed=1, **kwargs)
    other = make_synthetic_dataset(tmp_path / "c", seed=2, **kwargs)
    assert tree_digest(first) == tree_digest(second)
    assert tree_digest(first) != tree_digest(other)
    # The same call again is a no-op; other settings in the same folder are refused.
    assert make_synthetic_dataset(first, seed=1, **kwargs) == first
    with pytest.raises(FileExistsError, match="other settings"):
        make_synthetic_dataset(first, seed=3, **kwargs)


def test_synthetic_layout_counts_and_masks(synthetic_root):
    assert list_categories(synthetic_root) == sorted(CATEGORIES)
    for category in CATEGORIES:
        train = discover_records(synthetic_root, category, "train")
        test = discover_records(synthetic_root, category, "test")
        assert len(train) == 30 and all(r.label == 0 for r in train)
        assert sum(r.label for r in test) == 5 * len(DEFECTS[category])
        assert {r.defect_type for r in test} == {"good", *DEFECTS[category]}
        for record in test:
            if record.label:
                mask = np.asarray(Image.open(record.mask_path))
                assert mask.any(), f"empty mask {record.mask_path}"


def test_mvtec_items(synthetic_root):
    dataset = load_dataset(synthetic_root, "washer", "test", resize=80, imagesize=64)
    item = dataset[len(dataset) - 1]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, 64, 64)
    assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}
    assert item["label"] == 1 and item["defect_type"] != "good" and item["category"] == "washer"
    good = dataset[0]
    assert good["label"] == 0 and good["mask"].sum() == 0
    # Sorted by defect type then file name, as upstream.
    assert [r.defect_type for r in dataset.records] == sorted(r.defect_type for r in dataset.records)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_rgba_images_become_rgb(tmp_path, mode):
    root = make_mvtec_category(tmp_path, mode=mode)
    item = load_dataset(root, "thing", "test", resize=32, imagesize=32)[1]
    assert item["image"].shape == (3, 32, 32)
    if mode == "L":
        assert torch.allclose(item["image"][0] * 0.229 + 0.485, item["image"][1] * 0.224 + 0.456, atol=1e-5)
    assert item["mask"].sum() == 64  # the 8x8 box survives resize + crop exactly


def test_btad_mvtec3d_visa_folder_layouts(tmp_path):
    btad = tmp_path / "btad" / "01"
    write_image(btad / "train" / "ok" / "0000.bmp")
    write_image(btad / "test" / "ok" / "0001.bmp")
    write_image(btad / "test" / "ko" / "0002.bmp")
    write_mask(btad / "ground_truth" / "ko" / "0002.png")
    records = discover_records(tmp_path / "btad", "01", "test", layout="btad")
    assert [(r.label, r.defect_type) for r in records] == [(1, "ko"), (0, "good")]

    m3d = tmp_path / "m3d" / "bagel"
    write_image(m3d / "train" / "good" / "rgb" / "000.png")
    write_image(m3d / "test" / "crack" / "rgb" / "000.png")
    write_mask(m3d / "test" / "crack" / "gt" / "000.png")
    assert discover_records(tmp_path / "m3d", "bagel", "test", layout="mvtec3d")[0].mask_path.name == "000.png"

    visa = tmp_path / "visa"
    write_image(visa / "candle" / "Data" / "Images" / "Normal" / "0.JPG")
    write_image(visa / "candle" / "Data" / "Images" / "Anomaly" / "1.JPG")
    write_mask(visa / "candle" / "Data" / "Masks" / "Anomaly" / "1.png")
    (visa / "split_csv").mkdir()
    with open(visa / "split_csv" / "1cls.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerow(["candle", "train", "normal", "candle/Data/Images/Normal/0.JPG", ""])
        writer.writerow(["candle", "test", "anomaly", "candle/Data/Images/Anomaly/1.JPG",
                         "candle/Data/Masks/Anomaly/1.png"])
    assert list_categories(visa, "visa") == ["candle"]
    test = load_dataset(visa, "candle", "test", layout="visa", resize=32, imagesize=32)
    assert test[0]["label"] == 1 and test[0]["mask"].sum() > 0

    folder = tmp_path / "mine" / "part"
    for i in range(10):
        write_image(folder / "good" / f"{i}.png", seed=i)
    write_image(folder / "bad" / "x.png")
    train = discover_records(tmp_path / "mine", "part", "train", layout="folder", test_fraction=0.3)
    test = discover_records(tmp_path / "mine", "part", "test", layout="folder", test_fraction=0.3)
    assert len(train) == 7 and len(test) == 4
    assert not {r.path for r in train} & {r.path for r in test}


def test_missing_folder_names_path_and_fix(tmp_path):
    with pytest.raises(DatasetError, match=r"Category 'bottle' folder not found: .*bottle.*synthetic"):
        load_dataset(tmp_path, "bottle", "train")


def test_empty_train_set(tmp_path):
    (tmp_path / "thing" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="No images found for the 'train' split of 'thing'"):
        load_dataset(tmp_path, "thing", "train")


def test_unreadable_image_is_named(tmp_path):
    root = make_mvtec_category(tmp_path)
    broken = root / "thing" / "train" / "good" / "001.png"
    broken.write_text("not an image")
    with pytest.raises(DatasetError, match=r"Cannot read image .*001\.png"):
        load_dataset(root, "thing", "train")


def test_mask_size_mismatch_is_named(tmp_path):
    root = make_mvtec_category(tmp_path)
    write_mask(root / "thing" / "ground_truth" / "scratch" / "000_mask.png", size=40)
    with pytest.raises(DatasetError, match=r"000_mask\.png is 40x40 but its image .* is 32x32"):
        load_dataset(root, "thing", "test")


def test_missing_mask_is_named(tmp_path):
    root = make_mvtec_category(tmp_path)
    (root / "thing" / "ground_truth" / "scratch" / "000_mask.png").unlink()
    with pytest.raises(DatasetError, match="No ground-truth mask for '000'"):
        load_dataset(root, "thing", "test")


def test_resize_smaller_than_crop_is_refused(synthetic_root):
    with pytest.raises(ValueError, match="resize"):
        load_dataset(synthetic_root, "tile", "train", resize=64, imagesize=96)


# -- AeBAD layouts and the synthetic domain-shift dataset ------------------------------------------------------
def make_aebad_s(root):
    """AeBAD-S in miniature: 2 train domains, test good + 'fracture' in 'same' and 'view'."""
    base = root / "AeBAD_S"
    for domain in ("background", "view"):
        for i in range(2):
            write_image(base / "train" / "good" / domain / f"{i}.png", seed=i)
    for domain in ("same", "view"):
        write_image(base / "test" / "good" / domain / "g.png")
        write_image(base / "test" / "fracture" / domain / "f.png", seed=3)
    write_mask(base / "ground_truth" / "fracture" / "same" / "f.png")  # centre box: survives the crop
    write_mask(base / "ground_truth" / "fracture" / "view" / "f.png", box=(0, 0, 4, 4))  # corner: cropped away
    return root


def test_aebad_s_records_domains_and_filter(tmp_path):
    root = make_aebad_s(tmp_path)
    train = discover_records(root, "AeBAD_S", "train", layout="aebad_s")
    assert [(r.domain, r.label) for r in train] == [("background", 0)] * 2 + [("view", 0)] * 2
    test = discover_records(root, "AeBAD_S", "test", layout="aebad_s")
    assert {(r.defect_type, r.domain, r.label) for r in test} == {
        ("good", "same", 0), ("good", "view", 0), ("fracture", "same", 1), ("fracture", "view", 1)}
    assert all(r.mask_path.name == r.path.name for r in test if r.label)  # masks carry the image's own name
    view = discover_records(root, "AeBAD_S", "test", layout="aebad_s", domains=["view"])
    assert {r.domain for r in view} == {"view"} and len(view) == 2
    with pytest.raises(DatasetError, match=r"No test domain \['illumination'\].*\['same', 'view'\]"):
        discover_records(root, "AeBAD_S", "test", layout="aebad_s", domains=["illumination"])
    assert list_categories(root, "aebad_s") == ["AeBAD_S"]
    # Other layouts keep records without a domain.
    assert discover_records(make_mvtec_category(tmp_path / "mvtec"), "thing", "test")[0].domain == ""


def test_aebad_s_empty_mask_after_crop_is_good(tmp_path):
    root = make_aebad_s(tmp_path)
    test = load_dataset(root, "AeBAD_S", "test", layout="aebad_s", resize=32, imagesize=16)
    labels = {(r.domain, r.path.parent.parent.name): (r.label, r.defect_type) for r in test.records}
    assert labels[("same", "fracture")] == (1, "fracture")
    assert labels[("view", "fracture")] == (0, "good")  # its mask is empty after the centre crop
    assert test.labels.count(1) == 1
    # Without the crop the corner defect stays a defect.
    uncropped = load_dataset(root, "AeBAD_S", "test", layout="aebad_s", resize=32, imagesize=32)
    assert uncropped.labels.count(1) == 2


def test_aebad_v_records(tmp_path):
    base = tmp_path / "AeBAD_V"
    write_image(base / "train" / "good" / "video1_train" / "0.jpg")
    for video in ("video1", "video2"):
        write_image(base / "test" / video / "good" / "0.jpg")
        write_image(base / "test" / video / "anomaly" / "1.jpg")
    train = discover_records(tmp_path, "AeBAD_V", "train", layout="aebad_v")
    assert [(r.domain, r.label) for r in train] == [("video1_train", 0)]
    test = discover_records(tmp_path, "AeBAD_V", "test", layout="aebad_v")
    assert [(r.domain, r.label, r.mask_path) for r in test] == [
        ("video1", 0, None), ("video1", 1, None), ("video2", 0, None), ("video2", 1, None)]
    dataset = load_dataset(tmp_path, "AeBAD_V", "test", layout="aebad_v", resize=32, imagesize=32,
                           domains=["video2"])
    assert dataset.labels == [0, 1] and dataset[1]["mask"].sum() == 0


def test_aebad_missing_folders_name_path_and_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"'train/good' of 'AeBAD_S' folder not found: .*AeBAD_S.*<domain>"):
        discover_records(tmp_path, "AeBAD_S", "train", layout="aebad_s")
    (tmp_path / "AeBAD_S" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"test.good has no domain sub-folders\. Expected the layout"):
        discover_records(tmp_path, "AeBAD_S", "test", layout="aebad_s")
    (tmp_path / "AeBAD_V" / "test" / "video1").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"'good' frames of video1 folder not found: .*video1.good"):
        discover_records(tmp_path, "AeBAD_V", "test", layout="aebad_v")


def test_synthetic_aebad_is_deterministic_with_matching_masks(tmp_path):
    kwargs = {"categories": ("washer", "tile"), "n_train": 6, "n_test_good": 1, "n_test_defect": 1,
              "image_size": 64}
    first = make_synthetic_aebad(tmp_path / "a", seed=1, **kwargs)
    assert tree_digest(first) == tree_digest(make_synthetic_aebad(tmp_path / "b", seed=1, **kwargs))
    assert tree_digest(first) != tree_digest(make_synthetic_aebad(tmp_path / "c", seed=2, **kwargs))
    for category in ("washer", "tile"):
        train = discover_records(first, category, "train", layout="aebad_s")
        assert sorted(r.domain for r in train) == sorted(TRAIN_DOMAINS * 2)
        test = discover_records(first, category, "test", layout="aebad_s")
        assert {r.domain for r in test} == set(DOMAIN_SHIFTS)
        assert len(test) == len(DOMAIN_SHIFTS) * (1 + len(DEFECTS[category]))
        for record in test:
            if record.label:
                image, mask = Image.open(record.path), np.asarray(Image.open(record.mask_path))
                assert mask.shape == image.size[::-1] and mask.any(), record.mask_path


@pytest.mark.parametrize("domain", DOMAIN_SHIFTS)
@pytest.mark.parametrize("texture", [True, False])
def test_domain_shift_moves_the_mask_with_the_defect(domain, texture):
    size = 64
    pixels = np.full((size, size, 3), 128, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    pixels[20:30, 36:46] = (255, 0, 0)  # a pure red "defect"
    mask[20:30, 36:46] = 255
    yy, xx = np.mgrid[0:size, 0:size]
    support = np.ones((size, size), bool) if texture else np.hypot(yy - 32, xx - 32) < 28
    shifted, moved = shift_domain(pixels, mask, support, domain, np.random.default_rng(0))
    red = shifted[..., 0].astype(float) > 2.5 * shifted[..., 1:].max(axis=-1)
    overlap = (red & (moved > 0)).sum() / (red | (moved > 0)).sum()
    assert moved.any() and overlap > 0.85, f"mask and defect apart after '{domain}' (IoU {overlap:.2f})"
    assert (domain == "same") == np.array_equal(shifted, pixels)
