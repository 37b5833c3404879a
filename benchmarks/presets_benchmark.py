"""What each method's preset costs and reaches, side by side in one run (docs/presets.md).

    python benchmarks/presets_benchmark.py --realdata ../shared/realdata --threads 2
    python benchmarks/presets_benchmark.py --methods rd4ad mmr --preset workshop --n_train 200

Per method at the preset: the fit on ``--n_train`` synthetic training images at the preset's image size (the
workshop budget: <= 5 minutes on 2 cores for 200 images) and seconds per training image; on the real MPDD
metal_plate category (54 training images) image / pixel AUROC, AU-PRO and milliseconds per test image. ResAD
trains on ``--n_train`` images of the five synthetic categories (other classes) and scores metal_plate from 4
reference shots. The seconds per training image are what ``presets.PRESETS`` records for the notebooks' duration
estimates.
"""

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, Subset

from workshop_lib.data import make_synthetic_dataset
from workshop_lib.data.references import reference_images
from workshop_lib.evaluation import evaluate
from workshop_lib.presets import get_preset
from workshop_lib.runs import fit_timed
from workshop_lib.seeding import seed_everything

METHODS = ("patchcore", "rd4ad", "mmr", "resad", "mae-lora")


SYNTHETIC = ("washer", "tile", "weave", "wood", "capsule")


def resad_training_set(source, n_train: int) -> ConcatDataset:
    """ResAD learns from other classes: ``n_train`` images in all, an equal share of each synthetic category."""
    share = n_train // len(SYNTHETIC)
    return ConcatDataset([Subset(source.load(c, "train"), range(share)) for c in SYNTHETIC])


def fit_cost(method: str, preset_name: str, synthetic: Path, category: str, n_train: int) -> dict:
    """Fit seconds on ``n_train`` synthetic training images (of one category; ResAD: of all) at the preset."""
    preset = get_preset(method, preset_name)
    source = preset.data_source(str(synthetic))
    train = resad_training_set(source, n_train) if method == "resad" else source.load(category, "train")
    seed_everything(0)
    model = preset.model()
    seconds = fit_timed(model, train)
    return {"fit_seconds": seconds, "train_images": len(train), "fit_s_per_image": seconds / len(train)}


def real_accuracy(method: str, preset_name: str, realdata: Path, synthetic: Path, n_train: int) -> dict:
    """Image / pixel AUROC, AU-PRO and ms per test image on metal_plate at the preset."""
    preset = get_preset(method, preset_name)
    root = realdata / "mpdd_metal_plate"
    source = preset.data_source(str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = source.load("metal_plate", "test")
        seed_everything(0)
        model = preset.model()
        if method == "resad":
            model.fit(resad_training_set(preset.data_source(str(synthetic)), n_train), progress=False)
            model.add_references("metal_plate", reference_images(root, "metal_plate", 4, "mvtec", preset.resize,
                                                                 preset.imagesize))
            model.use_references("metal_plate", 4)
        else:
            model.fit(source.load("metal_plate", "train"), progress=False)
        started = time.perf_counter()
        _, metrics = evaluate(model, test, progress=False)
    infer_ms = 1000 * (time.perf_counter() - started) / len(test)
    return {"metal_plate_image_auroc": metrics["instance_auroc"],
            "metal_plate_pixel_auroc": metrics["full_pixel_auroc"], "metal_plate_aupro": metrics["full_pro"],
            "infer_ms_per_image": infer_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--preset", default="workshop", choices=("paper", "workshop"))
    parser.add_argument("--n_train", type=int, default=200, help="training images of the synthetic category")
    parser.add_argument("--category", default="washer", help="the synthetic category whose fit is timed")
    parser.add_argument("--realdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    synthetic = make_synthetic_dataset(Path(tempfile.mkdtemp()) / "synthetic", n_train=args.n_train,
                                       image_size=256)
    rows = []
    for method in args.methods:
        row = {"method": method, "preset": args.preset,
               **fit_cost(method, args.preset, synthetic, args.category, args.n_train)}
        if args.realdata.is_dir():
            row.update(real_accuracy(method, args.preset, args.realdata, synthetic, args.n_train))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
