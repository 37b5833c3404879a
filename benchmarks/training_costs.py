"""Training and inference cost of every method at its paper configuration, side by side in one run.

    python benchmarks/training_costs.py                       # every method, 8 training images, 224 px
    python benchmarks/training_costs.py --methods mae-lora mmr --n_train 16

Random-init weights (the cost does not depend on the values), synthetic 'washer' images. Per method: seconds per
training epoch (fit with 2 epochs minus fit with 1, so set-up and after-training passes cancel out), the same per
image, fixed set-up seconds (everything in fit that is not an epoch), inference seconds per image (batch 1, after
a warm-up image) and trainable parameters. Numbers of a 2-core CPU are in docs/<method>.md.
"""

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Subset

from workshop_lib.data import load_dataset, make_synthetic_dataset
from workshop_lib.device import describe_device, resolve_device
from workshop_lib.models.base import REGISTRY, AnomalyModel

DATA = Path(__file__).resolve().parent / ".data"
# The papers' configurations with random weights; only what is not already the class default is listed.
PAPER_CONFIGS: dict[str, dict] = {
    "patchcore": {"backbone": "wide_resnet50_2", "weights": None, "coreset_ratio": 0.1},
    "rd4ad": {"backbone": "wide_resnet50_2", "weights": None},
    "mmr": {"backbone": "wide_resnet50_2", "weights": None, "student_weights": None},
    "resad": {"backbone": "wide_resnet50_2", "weights": None},
    "mae-lora": {"architecture": "vit_large", "patch_size": 7, "weights": None, "warmup_epochs": 0},
}
TRAINED = ("rd4ad", "mmr", "resad", "mae-lora")


def trainable_parameters(model: AnomalyModel) -> int:
    """Parameters of the modules a method trains (0 for PatchCore, which learns a memory bank)."""
    modules = [value for value in vars(model).values() if isinstance(value, torch.nn.Module)]
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


def timed_fit(method: str, train, epochs: int, device: str) -> tuple[AnomalyModel, float]:
    config = dict(PAPER_CONFIGS[method], device=device)
    if method in TRAINED:
        config.update(epochs=epochs, batch_size=min(len(train), 8))
    model = REGISTRY[method](**config)
    start = time.perf_counter()
    model.fit(train, progress=False)
    return model, time.perf_counter() - start


def seconds_per_test_image(model: AnomalyModel, train, test, count: int) -> float:
    if hasattr(model, "add_references"):  # ResAD scores a class against its few-shot references
        shots = min(4, len(train))
        model.add_references("washer", Subset(train, range(shots))).use_references("washer", shots)
    images = [test[i]["image"][None] for i in range(count + 1)]
    model.predict(images[0])  # warm-up
    start = time.perf_counter()
    for image in images[1:]:
        model.predict(image)
    return (time.perf_counter() - start) / count


def measure(method: str, train, test, device: str, test_images: int) -> dict:
    model, one = timed_fit(method, train, 1, device)
    row = {"method": method, "train images": len(train), "trainable parameters": trainable_parameters(model)}
    if method in TRAINED:
        _, two = timed_fit(method, train, 2, device)
        row.update({"s / epoch": two - one, "s / image / epoch": (two - one) / len(train), "set-up s": 2 * one - two})
    else:
        row.update({"fit s": one})
    row["s / test image"] = seconds_per_test_image(model, train, test, test_images)
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(PAPER_CONFIGS), choices=list(PAPER_CONFIGS))
    parser.add_argument("--n_train", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--test_images", type=int, default=4)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    print("device:", describe_device(resolve_device(args.device)), "| torch threads:", torch.get_num_threads())
    root = make_synthetic_dataset(DATA / f"costs-{args.n_train}-{args.image_size}", categories=("washer",),
                                  n_train=args.n_train, n_test_good=5, n_test_defect=1, image_size=args.image_size)
    size = args.image_size
    train = load_dataset(root, "washer", "train", resize=size, imagesize=size)
    test = load_dataset(root, "washer", "test", resize=size, imagesize=size)
    rows = [measure(method, train, test, args.device, args.test_images) for method in args.methods]
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
