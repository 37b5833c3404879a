"""The method commands: ``<method> train`` and ``<method> evaluate`` for every registered method, ResAD's own train
and evaluate (one model for all seen classes, scored on unseen ones at several shots), and RD4AD's ``fps`` and
``export``. Flags of the models come from their constructors (flags.py); the work is done by ``runs`` and the
studies."""

import argparse
import json
from typing import Any

import torch
from torch.utils.data import ConcatDataset

from ..data import LAYOUTS, list_categories
from ..data.source import DataSource, run_name
from ..data.transforms import CROPS
from ..errors import UsageError
from ..exports.rd4ad import onnx_difference, write_triton_repository
from ..io import atomic_file
from ..models.base import REGISTRY, AnomalyModel
from ..models.rd4ad import RD4AD
from ..models.resad import ResAD
from ..predictions import write_results_csv
from ..presets import NAMES, Preset, get_preset
from ..runs import FIT_SECONDS_FILE, evaluate_category, fit_timed, new_run_folder, train_categories
from ..seeding import seed_everything
from ..speed import measure_fps
from ..studies.shots import SETTINGS, evaluate_shots, write_study
from .flags import SAVE_ALIASES, add_model_flags, model_config


# -- shared flags -----------------------------------------------------------------------------------------------
def add_output_flags(parser: argparse.ArgumentParser, method: str, training: bool) -> None:
    """Where results go and what is written besides results.csv."""
    parser.add_argument("results_path", help="folder for results (created if missing)")
    parser.add_argument("--save_segmentation_images", action="store_true",
                        help="write image | map | binarised map | mask grids of the test images")
    parser.add_argument("--no_predictions", action="store_true",
                        help="do not write predictions/<run>.npz (scores, maps, masks, thresholds)")
    parser.add_argument("--log_group", default="group", help="run folder name (<group>_0, _1... if it exists)")
    parser.add_argument("--log_project", default="project" if training else "evaluated", help="project folder name")
    if training:
        parser.add_argument("--holdout", type=float, default=0.0,
                            help="fraction of train/good kept out of fitting to set thresholds from normal images "
                                 "(validation/good is used instead where a category has it); 0: none")
        parser.add_argument("--false_alarm_rate", type=float, default=0.01,
                            help="share of normal images (and pixels) the thresholds from normal images let through")
        parser.add_argument("--save_model", *SAVE_ALIASES.get(method, ()), dest="save_model", action="store_true",
                            help="save each model under <run>/models/")
        parser.add_argument("--overwrite", action="store_true", help="replace saved models of the same name")


def image_size(text: str) -> int | tuple[int, int]:
    """``--imagesize``: a side (``224``) or height x width (``256x512``)."""
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected a size such as 224 or 256x512 (height x width), got {text!r}")
    return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def add_data_flags(parser: argparse.ArgumentParser, sizes: tuple[int, int] | None) -> None:
    """The dataset, its categories and the preprocessing: the method's own test transform by default, or (``sizes``
    None, for evaluate) the saved model's."""
    parser.add_argument("--data_path", required=True, help="dataset root folder")
    parser.add_argument("--dataset", default="mvtec", choices=LAYOUTS, help="dataset layout")
    parser.add_argument("-d", "--subdatasets", action="append", required=True, metavar="CATEGORY",
                        help="category to use (repeat for several)")
    saved = "default: the saved model's"
    parser.add_argument("--resize", type=int, default=sizes[0] if sizes else None,
                        help="shorter side after the first resize (crop center)" + ("" if sizes else f"; {saved}"))
    parser.add_argument("--imagesize", type=image_size, default=sizes[1] if sizes else None,
                        help="network input: a side or HEIGHTxWIDTH" + ("" if sizes else f"; {saved}"))
    parser.add_argument("--crop", choices=CROPS, default="center" if sizes else None,
                        help="center: resize the shorter side, crop the centre (upstream's MVTec protocol); none: "
                             "the whole frame resized; pad: letterboxed" + ("" if sizes else f"; {saved}"))


def data_source(args: argparse.Namespace) -> DataSource:
    return DataSource(args.data_path, args.dataset, args.resize, args.imagesize, args.crop)


def model_source(args: argparse.Namespace, model: AnomalyModel) -> DataSource:
    """The data of ``evaluate``: preprocessed as the model was trained unless flags say otherwise (then
    ``evaluation`` warns that the two differ)."""
    trained = model.preprocessing_ or DataSource("", resize=model.default_sizes[0],
                                                 imagesize=model.default_sizes[1]).preprocessing
    return DataSource(args.data_path, args.dataset, args.resize or trained.resize,
                      args.imagesize or trained.imagesize, args.crop or trained.crop)


def add_shot_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shots", type=int, nargs="+", default=[2, 4, 6, 8],
                        help="reference shots per unseen class; one result row per class and value")
    parser.add_argument("--reference_dir", help="reference images in <dir>/<category>/[train/good/] instead of "
                                                "seeded picks from each class's train/good")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--setting", default="custom", choices=list(SETTINGS),
                        help="train on one dataset's classes (-d, 'all' for every one), test on another's")
    parser.add_argument("--test_data_path", help="root of the test dataset (default: --data_path)")
    parser.add_argument("--test_dataset", help="layout of the test dataset (custom setting; default: --dataset)")
    parser.add_argument("-t", "--test_categories", action="append", metavar="CATEGORY",
                        help="unseen class (repeat); default: every class of the test dataset not trained on")


def add_method_commands(actions: argparse._SubParsersAction, method: str, model_cls: type[AnomalyModel],
                        parser_class: type[argparse.ArgumentParser], preset: Preset | None = None) -> None:
    """``train`` and ``evaluate`` of one method, and its extra commands; ``preset`` (from ``--preset``) replaces the
    constructor defaults of ``train``, single flags still override it."""
    sub = actions.add_parser(method, help=f"{model_cls.__name__}: train or evaluate").add_subparsers(
        dest="action", required=True, parser_class=parser_class)
    train = sub.add_parser("train", help="fit on each category's train/good images, then evaluate")
    add_output_flags(train, method, training=True)
    add_data_flags(train, model_cls.default_sizes)
    add_model_flags(train, model_cls)
    train.add_argument("--preset", choices=("auto", *NAMES), help="paper (the published configuration), workshop "
                       "(a 2-core laptop CPU) or auto (paper on a GPU); flags given as well override it")
    train.set_defaults(handler=run_train, model_cls=model_cls)
    if preset is not None:
        train.set_defaults(**preset.config, resize=preset.resize, imagesize=preset.imagesize, crop=preset.crop)
    evaluate = sub.add_parser("evaluate", help="evaluate saved models on the test split, in a new run folder")
    add_output_flags(evaluate, method, training=False)
    add_data_flags(evaluate, None)
    evaluate.add_argument("--model_paths", "--model_path", "--patch_core_paths", action="append", required=True,
                          dest="model_paths", help="saved model folder: one per category, or one for all")
    evaluate.add_argument("--seed", type=int, default=0, help="same seed, same data: same numbers")
    evaluate.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    evaluate.add_argument("--batch_size", type=int, help="images per batch (default: the model's)")
    evaluate.set_defaults(handler=run_evaluate, model_cls=model_cls)
    if model_cls is ResAD:
        add_shot_flags(train)
        add_setting_flags(train)
        train.set_defaults(handler=run_resad_train)
        add_shot_flags(evaluate)
        evaluate.set_defaults(handler=run_resad_evaluate)
    if model_cls is RD4AD:
        add_rd4ad_commands(sub)


# -- every method ------------------------------------------------------------------------------------------------
def run_train(args: argparse.Namespace) -> dict:
    """Fit, save (optionally) and evaluate one model per category in a new run folder; write results.csv."""
    repeated = sorted({c for c in args.subdatasets if args.subdatasets.count(c) > 1})
    if repeated:
        raise UsageError(f"Category given twice: {', '.join(repeated)}")
    config = model_config(args.model_cls, args)
    return train_categories(lambda: args.model_cls(**config), data_source(args), args.subdatasets,
                            args.results_path, args.log_project, args.log_group, seed=args.seed,
                            save_models=args.save_model, overwrite=args.overwrite,
                            save_predictions=not args.no_predictions,
                            save_segmentation_images=args.save_segmentation_images, holdout=args.holdout,
                            false_alarm_rate=args.false_alarm_rate)


def run_evaluate(args: argparse.Namespace) -> dict:
    """Evaluate saved models (one per category, or one for all), each on data preprocessed as it was trained, in a
    new run folder ``<results_path>/<log_project>/<log_group>[_N]``: a training run's files are never replaced."""
    if len(args.model_paths) not in (1, len(args.subdatasets)):
        raise UsageError(f"Give one model path per category ({len(args.subdatasets)}) or exactly one; "
                         f"got {len(args.model_paths)}.")
    paths = args.model_paths * len(args.subdatasets) if len(args.model_paths) == 1 else args.model_paths
    models = {category: args.model_cls.load(path, device=args.device)
              for category, path in zip(args.subdatasets, paths, strict=True)}
    splits = {category: model_source(args, model).load(category, "test") for category, model in models.items()}
    results = {}
    with new_run_folder(args.results_path, args.log_project, args.log_group) as output:
        print(f"Results go to {output}")
        for category, model in models.items():
            seed_everything(args.seed)
            results.update(evaluate_category(model, splits[category], run_name(args.dataset, category),
                                             None if args.no_predictions else output,
                                             args.batch_size or model.batch_size, args.save_segmentation_images))
            write_results_csv(results, output / "results.csv")
    return {"output": output, "results": results}


# -- ResAD -------------------------------------------------------------------------------------------------------
def resolve_setting(args: argparse.Namespace) -> tuple[str, str, list[str], list[str]]:
    """(train layout, test layout, seen classes, unseen classes) from the command line, checked."""
    train_layout, test_layout = SETTINGS[args.setting]
    if train_layout is None:
        train_layout, test_layout = args.dataset, args.test_dataset or args.dataset
    elif args.dataset not in ("mvtec", train_layout) or args.test_dataset not in (None, test_layout):
        raise UsageError(f"--setting {args.setting} trains on the {train_layout} layout and tests on {test_layout}; "
                         "drop --dataset/--test_dataset or use --setting custom.")
    seen = list_categories(args.data_path, train_layout) if args.subdatasets == ["all"] else list(args.subdatasets)
    test_root = args.test_data_path or args.data_path
    unseen = list(args.test_categories or [c for c in list_categories(test_root, test_layout) if c not in seen])
    overlap = sorted(set(seen) & set(unseen))
    if overlap:
        raise UsageError(f"Classes both trained on (-d) and tested (-t): {', '.join(overlap)}. ResAD tests on "
                         "classes never seen in training.")
    if not seen or not unseen:
        raise UsageError(f"Need seen (-d) and unseen (-t) classes; got seen={seen}, unseen={unseen}.")
    return train_layout, test_layout, seen, unseen


def run_resad_train(args: argparse.Namespace) -> dict[str, Any]:
    """Train one model on the seen classes, then evaluate every unseen class at every ``--shots`` value."""
    if args.holdout:
        raise UsageError("--holdout sets per-category thresholds; ResAD trains one model on the seen classes and "
                         "scores unseen ones from their references: leave it out.")
    train_layout, test_layout, seen, unseen = resolve_setting(args)
    print(f"seen classes ({train_layout}): {seen}\nunseen classes ({test_layout}): {unseen}")
    seed_everything(args.seed)
    source = DataSource(args.data_path, train_layout, args.resize, args.imagesize, args.crop)
    train = ConcatDataset([source.load(c, "train") for c in seen])
    config = model_config(ResAD, args)
    with new_run_folder(args.results_path, args.log_project, args.log_group) as output:
        print(f"Results go to {output}")
        model = ResAD(**{**config, "shots": max(args.shots),
                         "checkpoint_dir": config["checkpoint_dir"] or str(output / "checkpoints")})
        fit_seconds = round(fit_timed(model, train), 3)
        if args.save_model:
            model.save(output / "models" / f"resad_{args.setting}", overwrite=args.overwrite)
        table = evaluate_shots(model, args.test_data_path or args.data_path, unseen, args.shots, test_layout,
                               resize=args.resize, imagesize=args.imagesize, batch_size=args.batch_size,
                               reference_dir=args.reference_dir, output=None if args.no_predictions else output,
                               save_segmentation_images=args.save_segmentation_images)
        files = write_study(table, output)
        with atomic_file(output / FIT_SECONDS_FILE) as staging:
            staging.write_text(json.dumps({f"resad_{args.setting}": fit_seconds}, indent=2))
    print(table.groupby("shots")[["instance_auroc", "full_pixel_auroc", "full_pro"]].mean().round(4))
    return {"output": output, "results": table, "fit_seconds": fit_seconds, **files}


def run_resad_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Score the -d classes (unseen by the saved model) at every ``--shots`` value, in a new run folder."""
    if len(args.model_paths) != 1:
        raise UsageError("ResAD is one model for all classes: give exactly one --model_path.")
    seed_everything(args.seed)
    model = ResAD.load(args.model_paths[0], device=args.device)
    source = model_source(args, model)
    with new_run_folder(args.results_path, args.log_project, args.log_group) as output:
        print(f"Results go to {output}")
        table = evaluate_shots(model, args.data_path, args.subdatasets, args.shots, args.dataset,
                               resize=source.resize, imagesize=source.imagesize,
                               batch_size=args.batch_size or model.batch_size, reference_dir=args.reference_dir,
                               output=None if args.no_predictions else output,
                               save_segmentation_images=args.save_segmentation_images)
        files = write_study(table, output)
    return {"output": output, "results": table, **files}


# -- RD4AD -------------------------------------------------------------------------------------------------------
def add_rd4ad_commands(sub: argparse._SubParsersAction) -> None:
    fps = sub.add_parser("fps", help="images per second of the model alone, after warm-up")
    fps.add_argument("--model_path", help="a saved RD4AD model; default: an untrained one of --backbone")
    add_model_flags(fps, RD4AD, only=("backbone", "weights", "tile_rows", "tile_columns", "device", "seed"),
                    defaults={"weights": "none"})
    fps.add_argument("--imagesize", type=int, default=RD4AD.default_sizes[1], help="input side (ignored with "
                                                                                    "--model_path)")
    fps.add_argument("--batch_size", type=int, default=1)
    fps.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    fps.add_argument("--iterations", type=int, default=10, help="timed batches")
    fps.set_defaults(handler=run_fps)
    export = sub.add_parser("export", help="ONNX model (anomaly map inside) + Triton model repository")
    export.add_argument("model_path", help="a saved RD4AD model folder")
    export.add_argument("repository", help="Triton model repository folder (created if missing)")
    export.add_argument("--model_name", default="rd4ad")
    export.add_argument("--max_batch_size", type=int, default=8)
    export.add_argument("--overwrite", action="store_true", help="replace <repository>/<model_name>")
    export.set_defaults(handler=run_export)


def run_fps(args: argparse.Namespace) -> dict[str, Any]:
    if args.model_path:
        model = RD4AD.load(args.model_path, device=args.device)
        size = model.image_size_
    else:
        model = RD4AD(**model_config(RD4AD, args))
        size = (args.imagesize, args.imagesize)
    result = measure_fps(model, size, args.batch_size, args.warmup, args.iterations)
    print(f"{result['images_per_second']:.2f} images/s ({1000 * result['seconds_per_image']:.1f} ms/image), "
          f"{model.backbone}, {size[0]}x{size[1]} px, batch {args.batch_size}, {result['device']}")
    return result


def run_export(args: argparse.Namespace) -> dict[str, Any]:
    model = RD4AD.load(args.model_path, device="cpu")
    folder = write_triton_repository(model, args.repository, args.model_name, args.max_batch_size, args.overwrite)
    images = torch.randn(3, 3, *model.image_size_, generator=torch.Generator().manual_seed(0))
    differences = onnx_difference(model, folder / "1" / "model.onnx", images)
    print(f"Triton model repository: {folder}")
    print("max |onnxruntime - PyTorch| on 3 random images: "
          + ", ".join(f"{k} {v:.2e}" for k, v in differences.items()))
    return {"repository": folder, "onnx": folder / "1" / "model.onnx", "max_abs_difference": differences}


def add_all_method_commands(actions: argparse._SubParsersAction, parser_class: type[argparse.ArgumentParser],
                            preset: Preset | None = None) -> None:
    for method, model_cls in REGISTRY.items():
        add_method_commands(actions, method, model_cls, parser_class, preset if preset and preset.method == method
                            else None)


def preset_in(argv: list[str]) -> Preset | None:
    """The preset that ``<method> train ... --preset NAME`` asks for, read before parsing: its values become the
    defaults of that parse."""
    if len(argv) < 2 or argv[0] not in REGISTRY or argv[1] != "train":
        return None
    values = dict(zip(argv, argv[1:], strict=False))
    for item in argv:
        if item.startswith(("--preset=", "--device=")):
            key, value = item.split("=", 1)
            values[key] = value
    if "--preset" not in values:
        return None
    return get_preset(argv[0], values["--preset"], values.get("--device", "auto"))
