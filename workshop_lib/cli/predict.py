"""``python -m workshop_lib predict <model> <images or folders>`` and ``calibrate <model> <good images>``: the
decision per part on the line, with the thresholds chosen on good images (``inference``)."""

import argparse
from pathlib import Path

from ..errors import UsageError
from ..inference import calibrate, predict_images
from ..io import atomic_file
from ..models.base import load_model
from ..thresholds import describe


def add_predict_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="score new images with a saved model: a CSV, overlays on request")
    predict.add_argument("model_path", help="a saved model folder (any method)")
    predict.add_argument("images", nargs="+", help="image files and/or folders of images")
    predict.add_argument("--output", required=True, help="the CSV to write: path, score, decision, calibrated "
                                                         "score, error")
    predict.add_argument("--overlays", help="also write <folder>/<image>.png with the anomalous region outlined")
    predict.add_argument("--threshold", type=float, help="image threshold (default: the model's, from good images)")
    predict.add_argument("--batch_size", type=int, help="images per batch (default: the model's)")
    predict.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --output CSV")
    predict.set_defaults(handler=run_predict)
    calibration = commands.add_parser("calibrate", help="set a saved model's thresholds from good images")
    calibration.add_argument("model_path", help="a saved model folder; its thresholds are replaced")
    calibration.add_argument("images", nargs="+", help="good image files and/or folders the model did not train on")
    calibration.add_argument("--false_alarm_rate", type=float, default=0.01,
                             help="share of good images (and pixels) the thresholds let through")
    calibration.add_argument("--batch_size", type=int, help="images per batch (default: the model's)")
    calibration.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    calibration.set_defaults(handler=run_calibrate)


def run_predict(args: argparse.Namespace):
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise UsageError(f"{output} exists; pass --overwrite to replace it, or choose another --output.")
    model = load_model(args.model_path, device=args.device)
    table = predict_images(model, args.images, args.batch_size, args.overlays, args.threshold)
    with atomic_file(output) as staging:
        table.to_csv(staging, index=False)
    counts = table["decision"].value_counts().to_dict()
    print(f"{len(table)} images -> {output}: " + ", ".join(f"{n} {name}" for name, n in counts.items() if name)
          + (f", {int((table['error'] != '').sum())} unreadable" if (table["error"] != "").any() else ""))
    return table


def run_calibrate(args: argparse.Namespace) -> dict:
    model = load_model(args.model_path, device=args.device)
    before = getattr(model, "thresholds_", None)
    thresholds = calibrate(model, args.images, args.false_alarm_rate, args.batch_size)
    model.save(args.model_path, overwrite=True)
    if before:
        print(f"replaced the image threshold {before['image']['threshold']:.4g}")
    print(describe(thresholds["image"]))
    print(describe(thresholds["pixel"], "pixel"))
    return thresholds
