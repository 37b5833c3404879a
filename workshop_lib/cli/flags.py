"""Command-line flags generated from the models' constructors (as scikit-learn's ``get_params`` reads ``__init__``):
each constructor parameter becomes ``--<name>`` with the constructor's default and a type read from its annotation,
so a default is written once, in the constructor. The tables below add only what a signature cannot say: the
upstream spellings kept as aliases (patchcore-inspection's ``-p/--percentage``, ``-le``...), help texts, choices,
and the few flags that are not parameters (``--sampler``).
"""

import argparse
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backbones import BACKBONES
from ..models.base import AnomalyModel
from ..models.mae_lora import ARCHITECTURES, TRAINABLE_CHOICES
from ..models.resad import RESIDUALS


@dataclass(frozen=True)
class Flag:
    """How one constructor parameter appears on the command line, where it differs from a plain ``--<name>``."""

    aliases: tuple[str, ...] = ()  # more spellings of the same flag, e.g. upstream's ("-p", "--percentage")
    help: str = ""
    choices: tuple[str, ...] | None = None
    nargs: int | str | None = None  # default: the length of a tuple default, "+" for a list of names
    negative: tuple[str, ...] = ()  # spellings that turn a True-by-default switch off, e.g. "--no_augment"


@dataclass(frozen=True)
class ExtraFlag:
    """A flag that is no constructor parameter but sets some: upstream's other spelling of the same choice."""

    flags: tuple[str, ...]
    choices: tuple[str, ...]
    help: str
    sets: Callable[[str], dict[str, Any]]  # chosen value -> constructor arguments it implies


BACKBONE_HELP = "timm backbone, e.g. " + ", ".join(BACKBONES)
WEIGHTS_HELP = "imagenet, none (random init) or a weights file (.pth, .pt, .safetensors)"
COMMON = {
    "backbone": Flag(("-b",), BACKBONE_HELP),
    "weights": Flag(help=WEIGHTS_HELP),
    "layers": Flag(("-le", "--layers_to_extract_from"), "backbone layers (repeat the flag or list several); "
                                                         "default: the backbone's own"),
    "batch_size": Flag(help="images per batch (training and scoring)"),
    "epochs": Flag(help="passes over the training images"),
    "lr": Flag(help="learning rate"),
    "device": Flag(help="auto (the GPU when there is one), cpu, cuda, cuda:N or mps"),
    "seed": Flag(help="same seed, same data: same numbers"),
    "checkpoint_dir": Flag(help="write checkpoints to <dir>/<category>/last.pt (none: no checkpoints)"),
    "checkpoint_every": Flag(help="epochs between checkpoints"),
    "resume": Flag(help="continue from the last checkpoint in --checkpoint_dir"),
}
METHODS: dict[str, dict[str, Flag]] = {
    "patchcore": {
        "backbone": Flag(("-b", "--backbone_names"), BACKBONE_HELP + " (one backbone; ensembles are not supported)"),
        "pretrain_embed_dimension": Flag(help="an integer, or none: no projection at this stage (both none: "
                                              "anomalib's embedding, every channel of every layer)"),
        "target_embed_dimension": Flag(help="an integer, or none: no final projection"),
        "patchsize": Flag(help="neighbourhood of each patch feature (odd)"),
        "coreset_ratio": Flag(("-p", "--percentage"), "memory bank size as a fraction of all training patches"),
        "num_neighbors": Flag(("--anomaly_scorer_num_nn",), "k nearest neighbours averaged into a patch score"),
        "reweight": Flag(help="the paper's image-score re-weighting (Eq. 7)"),
        "reweight_neighbors": Flag(help="neighbourhood size b of the re-weighting"),
    },
    "rd4ad": {
        "tile_rows": Flag(("--patches_per_column",), "tiles one above the other (sliding-window mode)"),
        "tile_columns": Flag(("--patches_per_row",), "tiles side by side (sliding-window mode)"),
        "betas": Flag(help="Adam betas"),
        "calibration_holdout": Flag(help="fraction of the train images kept out of training to calibrate the "
                                         "score (0: calibrate on all of them)"),
        "calibration_sigmas": Flag(help="borderline (calibrated 0.5) = mean + this many std of normal scores"),
    },
    "mmr": {
        "weights": Flag(help="teacher: " + WEIGHTS_HELP),
        "student_weights": Flag(help="imagenet (timm's MAE ViT-B/16), none (random init) or an MAE checkpoint "
                                     "such as mae_visualize_vit_base.pth"),
        "embed_dim": Flag(help="student ViT width (ViT-B: 768)"),
        "depth": Flag(help="student ViT blocks (ViT-B: 12)"),
        "num_heads": Flag(help="student ViT heads (ViT-B: 12)"),
        "mask_ratio": Flag(help="fraction of patches hidden in training"),
        "betas": Flag(help="AdamW betas"),
        "augment": Flag(negative=("--no_augment",), help="random resized crop and flip in training"),
    },
    "resad": {
        "residual": Flag(choices=RESIDUALS, help="(f - p)^2 as the official code, or f - p as the paper"),
        "train_shots": Flag(help="references per class and batch in training"),
        "flow_chunk": Flag(help="positions per level and optimiser step"),
        "occ_radius": Flag(help="hypersphere radius of the constraintor"),
        "lr_milestones": Flag(nargs="*", help="epochs where the learning rate is multiplied by 0.1"),
        "checkpoint_dir": Flag(help="write checkpoints to <dir>/last.pt (default: <run>/checkpoints)"),
    },
    "mae-lora": {
        "architecture": Flag(("--model",), "encoder/decoder size (original: vit_large)", tuple(ARCHITECTURES)),
        "patch_size": Flag(help="pixels per patch side (7: 32 x 32 patches at 224 px)"),
        "weights": Flag(("--pretrained",), "none (random init) or a local MAE checkpoint (.pth)"),
        "lora_alpha": Flag(help="LoRA scaling = alpha / rank (loralib: 1)"),
        "trainable": Flag(choices=TRAINABLE_CHOICES, help="lora: adapters + patch embedding, tokens, norms, decoder "
                                                          "embed/head (original --freeze_non_lora); lora+decoder: "
                                                          "also the decoder blocks"),
        "norm_pix_loss": Flag(help="per-patch normalised pixel targets"),
        "inference_masks": Flag(help="complementary masks at test time"),
        "smoothing_sigma": Flag(help="Gaussian sigma of the anomaly map (px)"),
        "lr": Flag(help="absolute learning rate; none: blr * batch_size / 256"),
        "blr": Flag(help="base learning rate"),
    },
}
# The --save_model spellings of the original scripts.
SAVE_ALIASES = {"patchcore": ("--save_patchcore_model",), "rd4ad": ("--save_rd4ad_model",),
                "mmr": ("--save_mmr_model",), "resad": ("--save_resad_model",)}
# Constructor parameters that a command sets instead of a flag (ResAD's train: the largest of --shots).
NOT_FLAGS = {"resad": ("shots",)}
EXTRA_FLAGS = {"patchcore": (ExtraFlag(("--sampler",), ("approx_greedy_coreset", "identity"),
                                       "identity keeps every patch (a coreset ratio of 1)",
                                       lambda value: {"coreset_ratio": 1.0} if value == "identity" else {}),)}


def constructor_parameters(model_cls: type[AnomalyModel]) -> dict[str, inspect.Parameter]:
    """The constructor's parameters by name, without ``self``."""
    parameters = inspect.signature(model_cls.__init__).parameters
    return {name: p for name, p in parameters.items() if name != "self"}


def optional(kind: type) -> Callable[[str], Any]:
    """A flag type for ``X | None``: ``none`` or a value of ``kind`` (a positive one for integers)."""
    def parse(text: str) -> Any:
        if text.lower() == "none":
            return None
        expected = "a positive integer" if kind is int else "a number"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected} or 'none', got {text!r}") from None
        if kind is int and value <= 0:
            raise argparse.ArgumentTypeError(f"expected {expected} or 'none', got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} or none"
    return parse


def argument_options(parameter: inspect.Parameter, flag: Flag) -> dict[str, Any]:
    """``add_argument`` keywords for one parameter, from its annotation and default."""
    default, annotation = parameter.default, parameter.annotation
    options: dict[str, Any] = {"default": default, "help": flag.help}
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    is_optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation)
    if annotation is bool:
        options["action"] = argparse.BooleanOptionalAction if default else "store_true"
    elif is_optional and Path in arguments:  # a weights file, "imagenet" or none
        options["type"] = str
    elif is_optional and len(arguments) == 1 and arguments[0] in (int, float):
        options["type"] = optional(arguments[0])
    elif is_optional and typing.get_origin(arguments[0]) is Sequence:  # layer names
        options.update(type=str, nargs=flag.nargs or "+", action="extend")
    elif typing.get_origin(annotation) is Sequence:
        (kind,) = typing.get_args(annotation)
        options.update(type=kind, nargs=flag.nargs or len(default))
    else:
        options["type"] = arguments[0] if is_optional else annotation
    if flag.choices:
        options["choices"] = flag.choices
    return options


def flag_table(model_cls: type[AnomalyModel]) -> dict[str, Flag]:
    return {**COMMON, **METHODS.get(model_cls.method, {})}


def add_model_flags(parser: argparse.ArgumentParser, model_cls: type[AnomalyModel],
                    only: Sequence[str] | None = None, defaults: dict[str, Any] | None = None) -> None:
    """One flag per constructor parameter of ``model_cls`` (``only`` these, if given), plus its extra flags;
    ``defaults`` replaces a constructor default where a command needs another (e.g. random weights for a timing)."""
    table = flag_table(model_cls)
    hidden = NOT_FLAGS.get(model_cls.method, ())
    for name, parameter in constructor_parameters(model_cls).items():
        if name in hidden or (only is not None and name not in only):
            continue
        flag = table.get(name, Flag())
        options = argument_options(parameter, flag)
        if defaults and name in defaults:
            options["default"] = defaults[name]
        parser.add_argument(f"--{name}", *flag.aliases, dest=name, **options)
        for spelling in flag.negative:
            parser.add_argument(spelling, dest=name, action="store_false", help=f"the opposite of --{name}")
    if only is None:
        for extra in EXTRA_FLAGS.get(model_cls.method, ()):
            parser.add_argument(*extra.flags, dest=extra.flags[0].lstrip("-"), choices=extra.choices,
                                default=extra.choices[0], help=extra.help)


def model_config(model_cls: type[AnomalyModel], args: argparse.Namespace) -> dict[str, Any]:
    """Constructor arguments from parsed flags: lists become tuples where the default is a tuple, and the extra
    flags apply what they imply."""
    config = {}
    for name, parameter in constructor_parameters(model_cls).items():
        if hasattr(args, name):
            value = getattr(args, name)
            config[name] = tuple(value) if isinstance(parameter.default, tuple) and value is not None else value
    for extra in EXTRA_FLAGS.get(model_cls.method, ()):
        config.update(extra.sets(getattr(args, extra.flags[0].lstrip("-"))))
    return config
