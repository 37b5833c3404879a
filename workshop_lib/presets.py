"""Presets: per method, the ``paper`` configuration (as published, with its source) and a ``workshop`` one sized for
a 2-core laptop CPU; ``auto`` is ``paper`` where a GPU is present, else ``workshop``. Notebooks, the CLI
(``--preset``), the benchmarks and the leaderboard read this one table.

A preset holds the constructor arguments that differ from the method's defaults, the preprocessing, and what it
was measured to cost and reach on this project's 2-core CPU (``benchmarks/presets_benchmark.py``; table in
docs/presets.md): seconds of fit per training image, milliseconds per test image, AUROCs on the real MPDD
metal_plate category and on the synthetic data. Those numbers give the notebooks' "expect about N minutes" before
a cell trains.
"""

from dataclasses import dataclass, field
from typing import Any

from .data.source import DataSource
from .data.transforms import Preprocessing
from .device import resolve_device
from .models.base import REGISTRY, AnomalyModel

NAMES = ("paper", "workshop")


@dataclass(frozen=True)
class Preset:
    """One named configuration of one method (module docstring)."""

    method: str
    name: str
    config: dict[str, Any]
    resize: int
    imagesize: int
    crop: str = "center"
    source: str = ""
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.resize, self.imagesize, self.crop)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The constructor arguments with ``overrides`` that are not None (a notebook's single values)."""
        return {**self.config, **{k: v for k, v in overrides.items() if v is not None}}

    def model(self, **overrides: Any) -> AnomalyModel:
        return REGISTRY[self.method](**self.settings(**overrides))

    def data_source(self, root: str, layout: str = "mvtec") -> DataSource:
        return DataSource(root, layout, self.resize, self.imagesize, self.crop)

    def expected_fit_seconds(self, n_train: int) -> float | None:
        """The fit's duration on the measuring machine for ``n_train`` training images (None if not measured)."""
        per_image = self.measured.get("fit_s_per_image")
        return None if per_image is None else per_image * n_train

    def expectation(self, n_train: int) -> str:
        """A line to print before a cell trains: what to expect on a 2-core CPU."""
        seconds = self.expected_fit_seconds(n_train)
        if seconds is None:
            return f"{self.method} ({self.name} preset): no measured duration for this preset."
        where = "GPU work: hours on a CPU" if self.name == "paper" and seconds > 3600 else "on a 2-core CPU"
        return (f"{self.method} ({self.name} preset) on {n_train} training images: about "
                f"{format_duration(seconds)} {where} (measured {self.measured['fit_s_per_image']:.2g} s per "
                "training image; a GPU is many times faster).")


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


LITE0 = {"backbone": "efficientnet_lite0", "weights": "imagenet"}
PRESETS: dict[tuple[str, str], Preset] = {(p.method, p.name): p for p in (
    # -- paper: the published configurations (each method's constructor defaults; sources in its docstring) --
    Preset("patchcore", "paper", {}, 256, 224,
           source="Roth et al., CVPR 2022; patchcore-inspection IM224_WR50_L2-3_P01_D1024-1024_PS-3_AN-1"),
    Preset("rd4ad", "paper", {}, 256, 256, source="Deng & Li, CVPR 2022; hq-deng/RD4AD main.py"),
    Preset("mmr", "paper", {}, 256, 224, source="Zhang et al., arXiv 2304.02216; zhangzilongc/MMR MMR.yaml"),
    Preset("resad", "paper", {}, 224, 224, source="Yao et al., NeurIPS 2024; xcyao00/ResAD main.py"),
    Preset("mae-lora", "paper", {}, 224, 224, source="LucFrachon/mae-ad README command and main_train.py"),
    # -- workshop: a 2-core laptop CPU, ImageNet features from the bundled EfficientNet-Lite0 --
    Preset("patchcore", "workshop", {**LITE0, "pretrain_embed_dimension": None, "target_embed_dimension": None},
           256, 224, source="the embedding that keeps Lite0's channels (anomalib's); docs/presets.md"),
    Preset("rd4ad", "workshop", {**LITE0, "epochs": 30, "batch_size": 8}, 128, 128,
           source="Lite0 teacher, 30 epochs at 128 px; docs/presets.md"),
    Preset("mmr", "workshop", {**LITE0, "student_weights": None, "embed_dim": 192, "depth": 4, "num_heads": 3,
                               "epochs": 40, "batch_size": 8}, 128, 128,
           source="Lite0 teacher, a 192-wide 4-block ViT student from scratch, 40 epochs at 128 px; docs/presets.md"),
    Preset("resad", "workshop", {**LITE0, "epochs": 20, "batch_size": 8, "lr": 1e-4, "coupling_layers": 4,
                                 "pos_embed_dim": 64}, 128, 128,
           source="Lite0 encoder, 4 coupling layers, 20 epochs at 128 px; docs/presets.md"),
    Preset("mae-lora", "workshop", {"architecture": "vit_tiny", "patch_size": 8, "trainable": "lora+decoder",
                                    "epochs": 60, "warmup_epochs": 3, "batch_size": 8, "lr": 5e-3}, 128, 128,
           source="a tiny ViT at 128 px; docs/presets.md"),
)}


def resolve(name: str = "auto", device: str = "auto") -> str:
    """``auto`` -> ``paper`` where ``device`` resolves to a GPU, else ``workshop``; other names pass."""
    if name == "auto":
        return "paper" if resolve_device(device).type == "cuda" else "workshop"
    if name not in NAMES:
        raise ValueError(f"Unknown preset {name!r}; choose auto, {', '.join(NAMES)} (--preset)")
    return name


def get_preset(method: str, name: str = "auto", device: str = "auto") -> Preset:
    """The preset of ``method`` (``auto``: by device)."""
    key = (method, resolve(name, device))
    if key not in PRESETS:
        raise ValueError(f"No {key[1]} preset for {method!r}; methods: {sorted({m for m, _ in PRESETS})}")
    return PRESETS[key]
