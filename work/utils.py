"""The workshop's helpers, as in the first edition, now on top of workshop_lib.

    from utils import ALL_CATEGORIES, commandline_args, get_train_args, get_evaluate_args, trainer, evaluator
    with commandline_args(*get_train_args("0000", ("experiments", "step1"), ("bottle",))):
        trainer()

``trainer``/``evaluator`` return their results and never call ``sys.exit``, so no ``try/except SystemExit``
is needed; ``commandline_args`` restores ``sys.argv`` even when the run fails.
"""

from collections.abc import Sequence
from pathlib import Path

from workshop_lib.cli import commandline_args
from workshop_lib.cli import main as trainer
from workshop_lib.data import MVTEC_CATEGORIES, resolve_aebad_root, resolve_data_root

WORK_DIR = Path(__file__).resolve().parent
ALL_CATEGORIES = MVTEC_CATEGORIES
evaluator = trainer

__all__ = ["ALL_CATEGORIES", "WORK_DIR", "aebad_data", "commandline_args", "data_root", "evaluator",
           "get_evaluate_args", "get_train_args", "trainer"]


def data_root() -> str:
    """MVTec AD in work/data/mvtec_anomaly_detection when present, else the synthetic dataset (made once)."""
    return str(resolve_data_root(WORK_DIR)[0])


def aebad_data() -> tuple[str, str]:
    """(root, category) of AeBAD-S in work/data/AeBAD when present, else of the synthetic domain-shift dataset."""
    root, category, _ = resolve_aebad_root(WORK_DIR)
    return str(root), category


def get_train_args(
    exp_name: str,
    dst_folders: tuple[str, str],  # (results folder, project sub-folder)
    categories: Sequence[str],
    backbone: str = "wideresnet50",
    patchsize: int = 3,
    image_size: int = 224,  # final centre-crop size
    resize: int = 256,  # shorter side after the first resize (>= image_size)
    sampler_percentage: float = 0.001,
    target_embed_dimension: int | None = 1024,  # None: no final projection
    anomaly_scorer_num_nn: int = 1,
    data_path: str | None = None,
    weights: str = "imagenet",
    device: str = "auto",
    dataset: str = "mvtec",
    layers: Sequence[str] | None = None,
) -> list[str]:
    """argv for ``trainer``: models land in ``<dst_folders[0]>/<dst_folders[1]>/<exp_name>/models/mvtec_<cat>``."""
    args = ["command", "patchcore", "train", "--seed", "0", "--save_patchcore_model",
            "--log_group", exp_name, "--log_project", dst_folders[1], dst_folders[0],
            "-b", backbone, "--pretrain_embed_dimension", "1024",
            "--target_embed_dimension", str(target_embed_dimension),
            "--anomaly_scorer_num_nn", str(anomaly_scorer_num_nn), "--patchsize", str(patchsize),
            "--weights", str(weights), "--device", device,
            "-p", str(sampler_percentage), "--sampler", "approx_greedy_coreset",
            "--resize", str(resize), "--imagesize", str(image_size)]
    for layer in layers or ():  # default: the backbone's PatchCore layers (layer2 + layer3 for ResNets)
        args += ["-le", layer]
    for category in categories:
        args += ["-d", category]
    return args + ["--dataset", dataset, "--data_path", data_path or data_root()]


def get_evaluate_args(
    results_dst_folder: str,
    model_paths: Sequence[str],
    categories: Sequence[str],
    resize: int = 256,
    image_size: int = 224,
    data_path: str | None = None,
    device: str = "auto",
    dataset: str = "mvtec",
) -> list[str]:
    """argv for ``evaluator``: results.csv and predictions/ are written into ``results_dst_folder``."""
    args = ["command", "patchcore", "evaluate", "--seed", "0", results_dst_folder, "--device", device]
    for path in model_paths:
        args += ["--patch_core_paths", str(path)]
    args += ["--resize", str(resize), "--imagesize", str(image_size)]
    for category in categories:
        args += ["-d", category]
    return args + ["--dataset", dataset, "--data_path", data_path or data_root()]
