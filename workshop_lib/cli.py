"""Command line: ``python -m workshop_lib <method> train|evaluate ...``, ``weights list|fetch``, ``data synthetic``.

PatchCore's flags mirror patchcore-inspection's ``bin/run_patchcore.py`` and
``bin/load_and_evaluate_patchcore.py`` (one flat command instead of click's chained sub-commands, and
``--device auto|cpu|cuda`` instead of ``--gpu``). Every method registered in ``models`` gets ``train`` and
``evaluate`` through its ``add_arguments``/``from_args``; the per-category loop, results.csv, models and
predictions are written here once for all of them.

``main`` returns the results instead of calling ``sys.exit``, and usage errors raise ``UsageError``, so it can
run inside ``commandline_args`` in a notebook without ``try/except SystemExit``.
"""

import argparse
import json
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from . import models  # noqa: F401  (importing it registers every method's sub-commands)
from .backbones import BACKBONES, OTHER_TIMM_WEIGHTS, fetch_weights, weights_table
from .data import (
    LAYOUTS,
    AnomalyDataset,
    load_dataset,
    make_synthetic_aebad,
    make_synthetic_dataset,
    split_by_domain,
)
from .data.download import download_mvtec
from .evaluate import create_run_folder, evaluate, write_results_csv
from .io import atomic_file
from .models.base import REGISTRY, AnomalyModel


class UsageError(ValueError):
    """A wrong command line; the message is argparse's, with the usage line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print and sys.exit(2)
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")


@contextmanager
def commandline_args(*args: str):
    """Temporarily replace ``sys.argv`` (argv[0] included), restoring it even when the body raises."""
    saved = list(sys.argv)
    sys.argv[:] = [str(a) for a in args]
    try:
        yield sys.argv
    finally:
        sys.argv[:] = saved


def seed_everything(seed: int) -> None:
    """Same seed, same data -> same numbers (on the same machine)."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- shared arguments --------------------------------------------------------------------------------
def add_run_arguments(parser: argparse.ArgumentParser, training: bool) -> None:
    parser.add_argument("results_path", help="folder for results (created if missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N, mps")
    parser.add_argument("--save_segmentation_images", action="store_true",
                        help="write image | map | binarised map | mask grids of the test images")
    parser.add_argument("--no_predictions", action="store_true",
                        help="do not write predictions/<run>.npz (scores, maps, masks, thresholds)")
    if training:
        parser.add_argument("--log_group", default="group", help="run folder name")
        parser.add_argument("--log_project", default="project", help="project folder name")
        parser.add_argument("--overwrite", action="store_true", help="replace saved models of the same name")


def add_dataset_arguments(parser: argparse.ArgumentParser, resize: int = 256, imagesize: int = 224) -> None:
    parser.add_argument("--data_path", required=True, help="dataset root folder")
    parser.add_argument("--dataset", default="mvtec", choices=LAYOUTS, help="dataset layout")
    parser.add_argument("-d", "--subdatasets", action="append", required=True, metavar="CATEGORY",
                        help="category to use (repeat for several)")
    parser.add_argument("--resize", type=int, default=resize, help="shorter side after the first resize")
    parser.add_argument("--imagesize", type=int, default=imagesize, help="final centre-crop size")
    parser.add_argument("--batch_size", type=int, default=8)


def build_parser() -> Parser:
    parser = Parser(prog="python -m workshop_lib", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for method, model_cls in REGISTRY.items():
        actions = commands.add_parser(method, help=f"{model_cls.__name__}: train or evaluate")
        sub = actions.add_subparsers(dest="action", required=True, parser_class=Parser)
        train = sub.add_parser("train", help="fit on each category's train/good images, then evaluate")
        add_run_arguments(train, training=True)
        add_dataset_arguments(train, *model_cls.default_sizes)
        model_cls.add_arguments(train)
        train.set_defaults(handler=run_train, model_cls=model_cls)
        evaluate_parser = sub.add_parser("evaluate", help="evaluate saved models on the test split")
        add_run_arguments(evaluate_parser, training=False)
        add_dataset_arguments(evaluate_parser, *model_cls.default_sizes)
        evaluate_parser.add_argument("-p", "--model_paths", "--patch_core_paths", action="append",
                                     required=True, dest="model_paths",
                                     help="saved model folder: one per category, or one for all")
        evaluate_parser.set_defaults(handler=run_evaluate, model_cls=model_cls)
        model_cls.add_cli_actions(sub)

    weights = commands.add_parser("weights", help="where each backbone's (and MMR's student's) weights come from")
    weights_sub = weights.add_subparsers(dest="action", required=True, parser_class=Parser)
    weights_sub.add_parser("list").set_defaults(handler=run_weights_list)
    fetch = weights_sub.add_parser("fetch", help="download weights into the local cache (needs network)")
    fetch.add_argument("backbones", nargs="*", default=[*BACKBONES, *OTHER_TIMM_WEIGHTS],
                       help="backbones or timm checkpoints (default: all): " + ", ".join([*BACKBONES,
                                                                                           *OTHER_TIMM_WEIGHTS]))
    fetch.set_defaults(handler=run_weights_fetch)

    data = commands.add_parser("data", help="datasets")
    data_sub = data.add_subparsers(dest="action", required=True, parser_class=Parser)
    synthetic = data_sub.add_parser("synthetic", help="write the synthetic MVTec-layout dataset")
    synthetic.add_argument("root")
    synthetic.add_argument("--layout", choices=("mvtec", "aebad"), default="mvtec",
                           help="aebad: AeBAD-S layout with domain shifts (washer; test counts are per domain)")
    synthetic.add_argument("--n_train", type=int, default=30)
    synthetic.add_argument("--n_test_good", type=int, default=10)
    synthetic.add_argument("--n_test_defect", type=int, default=5)
    synthetic.add_argument("--image_size", type=int, default=128)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.set_defaults(handler=run_synthetic)
    mvtec = data_sub.add_parser("download-mvtec", help="download MVTec AD (4.9 GB, checksum-verified)")
    mvtec.add_argument("data_dir", help="folder that will hold mvtec_anomaly_detection/")
    mvtec.set_defaults(handler=lambda args: download_mvtec(args.data_dir))
    return parser


# -- handlers ----------------------------------------------------------------------------------------
def test_sets(test: AnomalyDataset, run_name: str) -> dict[str, AnomalyDataset]:
    """The test set by name: one per domain for layouts with domain shifts (AeBAD: ``<run>_same``,
    ``<run>_view``...), so results.csv's Mean is the mean over domains as in the MMR paper; else the whole set."""
    return {f"{run_name}_{domain}": part for domain, part in split_by_domain(test).items()} or {run_name: test}


def evaluate_and_record(model: AnomalyModel, args: argparse.Namespace, category: str, run_name: str,
                        output: Path) -> dict[str, dict]:
    """Evaluate one category (per domain where the layout has domains), write predictions and images, print the
    AUROCs; returns {result row name: metrics}."""
    test = load_dataset(args.data_path, category, "test", args.dataset, args.resize, args.imagesize)
    results = {}
    for name, dataset in test_sets(test, run_name).items():
        predictions, results[name] = evaluate(model, dataset, batch_size=args.batch_size)
        if not args.no_predictions:
            predictions.save(output / "predictions" / f"{name}.npz")
        if args.save_segmentation_images:
            from .plotting import save_example_grids

            save_example_grids(predictions, output / "segmentation_images" / name)
        print(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in results[name].items() if "auroc" in k))
    return results


def run_train(args: argparse.Namespace) -> dict:
    """Fit, save (optionally) and evaluate one model per category; write results.csv."""
    repeated = sorted({c for c in args.subdatasets if args.subdatasets.count(c) > 1})
    if repeated:
        raise UsageError(f"Category given twice: {', '.join(repeated)}")
    output = create_run_folder(args.results_path, args.log_project, args.log_group)
    print(f"Results go to {output}")
    results, timings = {}, {}
    for category in args.subdatasets:
        seed_everything(args.seed)
        run_name = f"{args.dataset}_{category}"
        train = load_dataset(args.data_path, category, "train", args.dataset, args.resize, args.imagesize)
        model = args.model_cls.from_args(args)
        started = time.perf_counter()
        model.fit(train)
        timings[run_name] = round(time.perf_counter() - started, 3)
        if getattr(args, "save_model", False):
            model.save(output / "models" / run_name, overwrite=args.overwrite)
        results.update(evaluate_and_record(model, args, category, run_name, output))
    write_results_csv(results, output / "results.csv")
    with atomic_file(output / "fit_seconds.json") as staging:
        staging.write_text(json.dumps(timings, indent=2))
    return {"output": output, "results": results, "fit_seconds": timings}


def run_evaluate(args: argparse.Namespace) -> dict:
    """Evaluate saved models (one per category, or one for all) and write results.csv into results_path."""
    if len(args.model_paths) not in (1, len(args.subdatasets)):
        raise UsageError(f"Give one model path per category ({len(args.subdatasets)}) or exactly one; "
                         f"got {len(args.model_paths)}.")
    paths = args.model_paths * len(args.subdatasets) if len(args.model_paths) == 1 else args.model_paths
    output = Path(args.results_path)
    results = {}
    for category, model_path in zip(args.subdatasets, paths, strict=True):
        seed_everything(args.seed)
        model = args.model_cls.load(model_path, device=args.device)
        run_name = f"{args.dataset}_{category}"
        results.update(evaluate_and_record(model, args, category, run_name, output))
    write_results_csv(results, output / "results.csv")
    return {"output": output, "results": results}


def run_weights_list(args: argparse.Namespace) -> list[dict]:
    rows = weights_table()
    for row in rows:
        state = "available" if row["available"] else "missing"
        print(f"{row['backbone']:<26} {row['source']:<55} {state:<10} {row['location']}")
    return rows


def run_weights_fetch(args: argparse.Namespace) -> dict:
    fetched = {}
    for name in args.backbones:
        fetched[name] = fetch_weights(name)
        print(f"{name}: {fetched[name]}")
    return fetched


def run_synthetic(args: argparse.Namespace) -> Path:
    make = make_synthetic_aebad if args.layout == "aebad" else make_synthetic_dataset
    root = make(args.root, n_train=args.n_train, n_test_good=args.n_test_good, n_test_defect=args.n_test_defect,
                image_size=args.image_size, seed=args.seed)
    print(f"Synthetic dataset in {root}")
    return root


def main(argv: Sequence[str] | None = None):
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command and return its result."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return args.handler(args)

