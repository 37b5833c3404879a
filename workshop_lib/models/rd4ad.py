"""RD4AD: Reverse Distillation from One-Class Embedding (Deng & Li, CVPR 2022; code hq-deng/RD4AD @ 6554076),
with what the Matroid fork (nraghuraman-matroid/RD4AD-fork) added for production: sliding-window patches, a
frames-per-second action, a calibrated score from training statistics and a Triton deployment.

Faithful to upstream unless noted:

- teacher: a frozen backbone's layers 1-3 (strides 4, 8, 16; ``backbone_spec(name).distillation_layers``);
  upstream uses torchvision's wide_resnet50_2 (256/512/1024 channels), ``resnet.py::wide_resnet50_2``.
- one-class bottleneck embedding (``resnet.py::BN_layer``): level 1 -> conv3x3 s2 -> BN -> ReLU -> conv3x3 s2
  -> BN -> ReLU; level 2 -> conv3x3 s2 -> BN -> ReLU; concatenated with level 3, then one ResNet stage of
  stride 2 (3 Bottlenecks of width_per_group 128 for WRN50, 2 BasicBlocks for ResNet-18) to 2 x C3 channels at
  stride 32. Upstream's ``AttnBottleneck`` has its attention commented out: it is a plain bottleneck.
- student decoder (``de_resnet.py::de_wide_resnet50_2`` / ``de_resnet18``): a mirrored ResNet, stages of
  [3, 4, 6] Bottlenecks (width_per_group 128) or [2, 2, 2] BasicBlocks; the first block of each stage
  upsamples with ConvTranspose2d(k2, s2) in place of the strided 3x3, and its shortcut is ConvT(k2, s2) + BN.
  Conv2d weights Kaiming-normal (fan_out), BN weight 1 / bias 0, ConvTranspose2d left at torch's default.
  Trainable parameters (``training.count_parameters``): 83.8 M for WRN50, 15.4 M for ResNet-18; upstream's
  ``BN_layer`` also defines a 1x1 ``conv4``/``bn4`` it never uses (8.4 M / 0.5 M), left out here.
  mobilenet_v2 and efficientnet_lite0 teachers get the BasicBlock student with their own channel counts (not
  in upstream).
- loss (``main.py::loss_fucntion``): per level, the batch mean of 1 - cosine similarity between each
  sample's whole flattened C x H x W maps; summed over the 3 levels.
- training (``main.py``): Adam(lr 0.005, betas (0.5, 0.999)) on the bottleneck + decoder, batch 16, 256 px,
  200 epochs, no augmentation, no scheduler. Here the teacher runs under ``no_grad`` (upstream computes its
  unused gradients) and the shared ``training.train_epochs`` loop adds checkpoints and resume.
- anomaly map (``test.py::cal_anomaly_map(..., amap_mode='a')``): per level 1 - cos along channels, bilinear
  upsampling (align_corners=True) to the input size, summed, Gaussian sigma 4; image score = max of the map.
  The smoothing is done in torch (``maps.gaussian_blur``, equal to scipy's ``gaussian_filter``), so the map is
  computed on the GPU and is part of the ONNX graph.

Matroid fork features (README, ``config.py``, ``test.py``):

- ``tile_rows`` x ``tile_columns`` tiles (the fork's ``--patches-per-column/--patches-per-row``): training
  and test images are cut into non-overlapping tiles, each tile is one network input, and the tiles' distance
  maps are stitched back into the full image before smoothing and scoring, so metrics are computed on full
  images (the fork's ``norm-patches-test`` + ``unpatch``). ``batch_size`` counts full images.
- calibrated score. The fork's README asks for "0 = extremely normal, 0.5 = iffy, 1 = extremely anomalous"
  from training statistics, but its formula and ``training_stats.json`` fields are not public. This is a
  reconstruction of the idea, not Matroid's code: with the mean m and standard deviation s of the image scores
  of normal images (the training images, or ``calibration_holdout`` of them kept out of training),
  ``calibrated = sigmoid((score - (m + k s)) / s)``, k = ``calibration_sigmas`` (3). A typical normal image
  (score m) gets sigmoid(-3) = 0.047, the borderline m + 3 s gets 0.5, m + 6 s gets 0.95. The map is monotone,
  so AUROC is unchanged. Training images score lower than unseen normals (the student has seen them), so a
  held-out set gives a more honest borderline.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..backbones import Weights, backbone_spec
from ..device import resolve_device
from ..io import atomic_file
from ..maps import check_tiling, cosine_distance_map, gaussian_blur, split_tiles, stitch_tiles
from ..seeding import seeded
from ..training import checkpoint_folder, shuffled_loader, train_epochs
from .components.teacher import TeacherStudentModel, frozen_teacher

STATS_FILE = "training_stats.json"
NETWORK_STRIDE = 32  # the bottleneck halves the stride-16 level once more; the decoder must mirror it exactly


# -- network ---------------------------------------------------------------------------------------
def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


def deconv2x2(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block; with ``upsample`` and stride 2 the first conv is ConvT(k2, s2) (de_resnet.py)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 base_width: int = 64, upsample: bool = False) -> None:
        super().__init__()
        self.conv1 = deconv2x2(inplanes, planes) if upsample and stride == 2 else conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3); with ``upsample`` and stride 2 that conv is ConvT(k2, s2)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 base_width: int = 64, upsample: bool = False) -> None:
        super().__init__()
        width = int(planes * base_width / 64)
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = deconv2x2(width, width) if upsample and stride == 2 else conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_stage(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, blocks: int,
               base_width: int, upsample: bool) -> nn.Sequential:
    """A stride-2 ResNet stage (``_make_layer``), downsampling or, in the decoder, upsampling."""
    out = planes * block.expansion
    resample = deconv2x2(inplanes, out) if upsample else conv1x1(inplanes, out, stride=2)
    layers = [block(inplanes, planes, 2, nn.Sequential(resample, nn.BatchNorm2d(out)), base_width, upsample)]
    layers += [block(out, planes, base_width=base_width) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class StudentSpec:
    """Which residual block, how many per stage, and the bottleneck width for a teacher (resnet.py, de_resnet.py)."""

    block: str
    bottleneck_blocks: int
    decoder_blocks: tuple[int, int, int]
    base_width: int = 64


STUDENTS = {
    "wide_resnet50_2": StudentSpec("bottleneck", 3, (3, 4, 6), base_width=128),
    "resnet18": StudentSpec("basic", 2, (2, 2, 2)),
    "mobilenet_v2": StudentSpec("basic", 2, (2, 2, 2)),
    "efficientnet_lite0": StudentSpec("basic", 2, (2, 2, 2)),
}


class OneClassBottleneck(nn.Module):
    """Multi-scale fusion of the teacher's 3 levels, then one stride-2 stage: the one-class embedding."""

    def __init__(self, channels: Sequence[int], spec: StudentSpec) -> None:
        super().__init__()
        c1, c2, c3 = channels
        block = BLOCKS[spec.block]
        self.conv1, self.bn1 = conv3x3(c1, c2, 2), nn.BatchNorm2d(c2)
        self.conv2, self.bn2 = conv3x3(c2, c3, 2), nn.BatchNorm2d(c3)
        self.conv3, self.bn3 = conv3x3(c2, c3, 2), nn.BatchNorm2d(c3)
        self.relu = nn.ReLU(inplace=True)
        self.embed = make_stage(block, 3 * c3, 2 * c3 // block.expansion, spec.bottleneck_blocks,
                                spec.base_width, upsample=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        level1 = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(features[0]))))))
        level2 = self.relu(self.bn3(self.conv3(features[1])))
        return self.embed(torch.cat([level1, level2, features[2]], dim=1))


class StudentDecoder(nn.Module):
    """Mirror of the teacher: embedding (2 C3, stride 32) -> C3 @ 16 -> C2 @ 8 -> C1 @ 4, in the teacher's order."""

    def __init__(self, channels: Sequence[int], spec: StudentSpec) -> None:
        super().__init__()
        c1, c2, c3 = channels
        block = BLOCKS[spec.block]
        e, (n1, n2, n3), width = block.expansion, spec.decoder_blocks, spec.base_width
        self.stage1 = make_stage(block, 2 * c3, c3 // e, n1, width, upsample=True)
        self.stage2 = make_stage(block, c3, c2 // e, n2, width, upsample=True)
        self.stage3 = make_stage(block, c2, c1 // e, n3, width, upsample=True)

    def forward(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        level3 = self.stage1(embedding)
        level2 = self.stage2(level3)
        return [self.stage3(level2), level2, level3]


def init_weights(module: nn.Module) -> None:
    """Upstream's init: Kaiming-normal (fan_out) Conv2d, BN weight 1 and bias 0; ConvTranspose2d untouched."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class RD4ADNetwork(nn.Module):
    """Frozen teacher + trainable ``student`` (bottleneck, decoder); ``forward`` gives smoothed maps and scores,
    tiling included, so the same module is trained, scored, timed and exported."""

    def __init__(self, backbone: str, weights: Weights, seed: int, rows: int = 1, columns: int = 1) -> None:
        super().__init__()
        name = backbone_spec(backbone).name
        self.teacher = frozen_teacher(name, None, weights, seed)
        spec = STUDENTS[name]
        if spec.block == "bottleneck" and any(c % Bottleneck.expansion for c in self.teacher.channels):
            raise ValueError(f"{name}'s channels {self.teacher.channels} do not fit a bottleneck decoder")
        with seeded(seed):
            self.student = nn.ModuleDict({"bottleneck": OneClassBottleneck(self.teacher.channels, spec),
                                          "decoder": StudentDecoder(self.teacher.channels, spec)})
            init_weights(self.student)
        self.rows, self.columns = rows, columns

    def distill(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Teacher features (no gradient) and the student's reconstruction of them, for network inputs."""
        with torch.no_grad():
            teacher = self.teacher(images)
        return teacher, self.student["decoder"](self.student["bottleneck"](teacher))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (N, 3, H, W) -> anomaly maps (N, H, W) and image scores (N,)."""
        check_tiling(images.shape[-2], images.shape[-1], self.rows, self.columns, NETWORK_STRIDE)
        tiles = split_tiles(images, self.rows, self.columns)
        teacher, student = self.distill(tiles)
        maps = cosine_distance_map(teacher, student, tiles.shape[-2:])
        maps = gaussian_blur(stitch_tiles(maps.unsqueeze(1), self.rows, self.columns).squeeze(1))
        return maps, maps.flatten(1).amax(dim=1)


def distillation_loss(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
    """Sum over levels of the batch mean of 1 - cos(flattened teacher map, flattened student map)."""
    return sum(torch.mean(1 - F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1))
               for t, s in zip(teacher, student, strict=True))


# -- calibration -----------------------------------------------------------------------------------
def score_statistics(scores: np.ndarray) -> dict[str, float]:
    """Summary of normal images' image scores, kept with the model and written to training_stats.json."""
    scores = np.asarray(scores, dtype=np.float64)
    quantiles = np.quantile(scores, [0.05, 0.5, 0.95, 0.99])
    return {"n": int(len(scores)), "mean": float(scores.mean()), "std": float(scores.std(ddof=1)),
            "min": float(scores.min()), "max": float(scores.max()),
            **{f"q{int(q * 100):02d}": float(v) for q, v in zip((0.05, 0.5, 0.95, 0.99), quantiles, strict=True)}}


def calibration_parameters(stats: dict[str, float], sigmas: float) -> tuple[float, float]:
    """(borderline score m + k s, scale s) of the logistic calibration; s is floored to stay finite."""
    scale = max(stats["std"], 1e-6)
    return stats["mean"] + sigmas * scale, scale


# -- the model -------------------------------------------------------------------------------------
class RD4AD(TeacherStudentModel):
    """Teacher encoder, one-class bottleneck, student decoder; anomaly = where the student fails to restore."""

    method = "rd4ad"
    default_sizes = (256, 256)  # upstream: Resize((256, 256)) -> CenterCrop(256)

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        weights: Weights = "imagenet",
        epochs: int = 200,
        batch_size: int = 16,
        lr: float = 0.005,
        betas: Sequence[float] = (0.5, 0.999),
        tile_rows: int = 1,
        tile_columns: int = 1,
        calibration_holdout: float = 0.0,
        calibration_sigmas: float = 3.0,
        checkpoint_dir: str | None = None,
        checkpoint_every: int = 10,
        resume: bool = False,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.betas = betas
        self.tile_rows = tile_rows
        self.tile_columns = tile_columns
        self.calibration_holdout = calibration_holdout
        self.calibration_sigmas = calibration_sigmas
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.device = device
        self.seed = seed
        self._network: RD4ADNetwork | None = None

    # -- network -----------------------------------------------------------------------------------
    @property
    def network(self) -> RD4ADNetwork:
        """Teacher and student, built on first use on the resolved device."""
        if self._network is None:
            if backbone_spec(self.backbone).name not in STUDENTS:
                raise ValueError(f"RD4AD has no student decoder for {self.backbone}; use one of {', '.join(STUDENTS)}")
            network = RD4ADNetwork(self.backbone, self.weights, self.seed, self.tile_rows, self.tile_columns)
            self._network = network.to(resolve_device(self.device)).eval()
        return self._network

    # -- fit ---------------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, progress: bool = True) -> "RD4AD":
        """Train the bottleneck and decoder on normal images, then calibrate scores on normal images."""
        size = self.start_fit(dataset)
        check_tiling(*size, self.tile_rows, self.tile_columns, NETWORK_STRIDE)
        self._network = None
        network, device = self.network, self.torch_device
        train_set, calibration_set = self.split_for_calibration(dataset)
        loader, shuffling = shuffled_loader(train_set, self.batch_size, self.seed)
        optimizer = torch.optim.Adam(network.student.parameters(), lr=self.lr, betas=tuple(self.betas))

        def loss_of_batch(batch: dict) -> torch.Tensor:
            tiles = split_tiles(batch["image"].to(device), self.tile_rows, self.tile_columns)
            return distillation_loss(*network.distill(tiles))

        checkpoints = checkpoint_folder(self.checkpoint_dir, dataset)
        self.losses_ = train_epochs(network.student, optimizer, lambda: loader, loss_of_batch, self.epochs,
                                    checkpoint_dir=checkpoints, checkpoint_every=self.checkpoint_every,
                                    resume=self.resume, progress=progress, settings=self.training_settings(),
                                    generators=[shuffling],
                                    description=self.progress_label(dataset))
        self.image_size_ = size
        if calibration_set is None:
            self.calibrate(train_set, progress, source="train")
        else:
            self.calibrate(calibration_set, progress, source="holdout")
        if checkpoints is not None:
            self.write_training_stats(checkpoints / STATS_FILE)
        return self

    def split_for_calibration(self, dataset: Dataset) -> tuple[Dataset, Dataset | None]:
        """(train, calibration) subsets: ``calibration_holdout`` of the images, drawn with the seed, or none."""
        if not 0 <= self.calibration_holdout < 1:
            raise ValueError(f"calibration_holdout must be in [0, 1), got {self.calibration_holdout}")
        held = int(round(len(dataset) * self.calibration_holdout))
        if self.calibration_holdout == 0:
            return dataset, None
        if held < 2 or len(dataset) - held < 1:
            raise ValueError(f"calibration_holdout={self.calibration_holdout} of {len(dataset)} images leaves "
                             f"{held} for calibration (need >= 2) and {len(dataset) - held} for training.")
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed)).tolist()
        return Subset(dataset, order[held:]), Subset(dataset, order[:held])

    def calibrate(self, normal_images: Dataset, progress: bool = True, source: str = "given") -> "RD4AD":
        """Set the calibration statistics from image scores of normal images (train, held-out or new ones)."""
        if len(normal_images) < 2:
            raise ValueError("Calibration needs at least 2 normal images (for a standard deviation).")
        loader = DataLoader(normal_images, batch_size=self.batch_size, shuffle=False)
        scores = [self.predict(batch["image"]).image_scores
                  for batch in tqdm(loader, desc="Calibrating", disable=not progress, leave=False)]
        self.score_statistics_ = {**score_statistics(np.concatenate(scores)), "source": source}
        return self

    def calibration(self) -> tuple[float, float]:
        """(borderline raw score, scale) of the calibrated score."""
        self.check_fitted()
        return calibration_parameters(self.score_statistics_, self.calibration_sigmas)

    def calibrated_scores(self, image_scores: np.ndarray) -> np.ndarray:
        """Raw image scores -> [0, 1]: ~0 clearly normal, 0.5 borderline, ~1 clearly anomalous (module doc)."""
        borderline, scale = self.calibration()
        return expit((np.asarray(image_scores, dtype=np.float64) - borderline) / scale).astype(np.float32)

    def training_stats(self) -> dict[str, Any]:
        borderline, scale = self.calibration()
        return {"image_scores": self.score_statistics_,
                "calibration": {"rule": "sigmoid((score - borderline) / scale)", "borderline": borderline,
                                "scale": scale, "sigmas": self.calibration_sigmas},
                "epochs": len(self.losses_), "losses": self.losses_, "image_size": list(self.image_size_)}

    def write_training_stats(self, path: Path) -> Path:
        with atomic_file(path) as staging:
            staging.write_text(json.dumps(self.training_stats(), indent=2))
        return path

    # -- persistence -------------------------------------------------------------------------------
    def learned_values(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size_), "losses": self.losses_,
                "score_statistics": self.score_statistics_}

    def load_learned(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        self._network = None
        self.network.student.load_state_dict(tensors)
        self.image_size_ = tuple(values["image_size"])
        self.losses_ = list(values["losses"])
        self.score_statistics_ = dict(values["score_statistics"])
