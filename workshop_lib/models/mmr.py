"""MMR: Masked Multi-scale Reconstruction (Zhang et al., "Industrial Anomaly Detection with Domain Shift: A Real-world
Dataset and Masked Multi-scale Reconstruction", arXiv 2304.02216; code zhangzilongc/MMR @ 22d1b17).

A frozen CNN teacher gives multi-scale features; a student ViT sees a randomly masked image (MAE style) and a
simple feature pyramid (ViTDet) rebuilds the teacher's features at every level from the visible patches. At test
time nothing is masked; where the student's features disagree with the teacher's, the image is anomalous.

Faithful to upstream unless noted (file references are to zhangzilongc/MMR):

- teacher (``tools/train.py``, ``utils/backbones.py``): frozen, eval mode, no grad; torchvision wide_resnet50_2
  with ImageNet weights, layers 1-3 (256/512/1024 channels at strides 4/8/16). Here any backbone of
  ``backbones.py`` whose layers have strides patch/4, patch/2 or patch (e.g. resnet18 for CI).
- student encoder (``models/MMR/MMR.py::MMR_base``): MAE ViT-B/16, embed 768, depth 12, 12 heads, mlp ratio 4,
  LayerNorm eps 1e-6, timm ``Block(qkv_bias=True)``, cls token, fixed 2-D sin-cos position table; MAE random
  masking (argsort of per-sample noise, ``ids_restore``) before the blocks; final LayerNorm. Upstream builds the
  table for 14x14 and resizes it bicubically for other sizes (``get_abs_pos``); here it is computed for the
  actual grid (any image whose sides are multiples of the patch size). At mask ratio 0 upstream still shuffles
  the tokens (a no-op for the transformer up to float rounding); here they stay in order, so scores are exactly
  reproducible.
- feature pyramid (``forward_decoder_FPN``): masked positions filled with a learned mask token, unshuffled, plus
  the same fixed sin-cos table; per level ConvT(k2 s2) -> LN2d -> GELU -> ConvT(k2 s2) (scale 4), ConvT (scale 2)
  or identity (scale 1), then Conv1x1 + LN2d and Conv3x3 + LN2d (no bias) to the teacher's channels.
- init (``initialize_weights``): Linear xavier_uniform (bias 0), patch projection xavier_uniform on its flattened
  weight, LayerNorm 1/0, cls and mask tokens N(0, 0.02); convolutions at torch's default.
- student weights (``tools/train.py``, ``utils/common.py::scratch_MAE_decoder``): upstream starts from MAE's
  ``mae_visualize_vit_base.pth``, drops every ``decoder`` key and ``mask_token`` and loads ``strict=False``;
  the whole ViT is fine-tuned. ``student_weights`` takes such a file, or ``"imagenet"`` = timm's
  ``vit_base_patch16_224.mae`` (MAE's own ImageNet-1k pre-trained encoder; the same pre-training recipe with
  normalised-pixel targets, so not bit-identical to the visualize checkpoint), or ``None`` (random init). The
  checkpoint's ``pos_embed`` is dropped too: it is the fixed table, recomputed here.
- loss (``models/MMR/utils.py::each_patch_loss_function``): per level the mean over pixels of 1 - cos along
  channels, summed over levels.
- training (``method_config/*/MMR.yaml`` over ``config/defaults.py``, ``tools/train.py``): AdamW lr 1e-3, betas
  (0.9, 0.95), weight decay 0.05 except biases and norm weights (timm ``add_weight_decay``), batch 16, 200
  epochs, train mask ratio 0.4, test mask ratio 0. Upstream's seed is 54; here ``seed`` (default 0).
- LR schedule (``models/MMR/utils.py::mmr_adjust_learning_rate``, per epoch): lr * e / 50 for epochs e < 50
  (so epoch 0 runs at lr 0), then lr, lr / 10 from the 120th epoch (e >= 119) and lr / 100 from the 160th
  (e >= 159). With fewer epochs E the same curve is stretched: epoch e is read as upstream epoch e * 200 / E
  (E = 20: warm-up over epochs 0-4, /10 from e = 12, /100 from e = 16). A resumed run continues the curve.
- train augmentation (``datasets/mvtec.py::transform_img_MMR``): RandomResizedCrop(scale (0.7, 1.0), bicubic)
  and horizontal flip. The library's datasets give resized, centre-cropped, normalised tensors, so here each
  image of the batch is cropped and flipped on the device (torchvision v2), from the centre crop rather than
  from the original image. ``augment=False`` switches it off.
- anomaly map and score (``models/MMR/MMR_pipeline.py::evaluation`` + ``utils.py::cal_anomaly_map``): per level
  1 - cos along channels, bilinear upsampling (align_corners=True) to the image size, summed, Gaussian sigma 4
  (``maps.gaussian_blur`` = scipy's ``gaussian_filter``); image score = max of the image's map.
- test transform: Resize 256 -> CenterCrop 224 (``default_sizes``).
- progress bar, checkpoints every ``checkpoint_every`` epochs and ``resume``: ``training.train_epochs``. Upstream
  has none and hard-codes ``cuda:0``; here the device is chosen by ``device.resolve_device``.
"""

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d, PatchEmbed
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T
from torchvision.transforms.functional import InterpolationMode

from ..backbones import MAE_VIT_BASE, Weights, parse_weights, read_state_dict
from ..device import resolve_device
from ..errors import WeightsUnavailableError
from ..maps import cosine_distance_map, gaussian_blur
from ..seeding import seeded
from ..training import checkpoint_folder, shuffled_loader, train_epochs
from .components.teacher import TeacherStudentModel, frozen_teacher
from .components.vit import init_mae_weights, layer_norm, sincos_pos_embed, vit_blocks

MAE_CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_base.pth"
WEIGHTS_ADVICE = (f"Download MAE's checkpoint ({MAE_CHECKPOINT_URL}) and pass student_weights=<that file> "
                  f"(--student_weights PATH), or run once with network: python -m workshop_lib weights fetch "
                  f"{MAE_VIT_BASE} for student_weights='imagenet'; "
                  "student_weights=None (--student_weights none) trains the ViT from random init.")
UPSTREAM_EPOCHS, WARMUP_EPOCHS, DECAY_EPOCHS = 200, 50, (119, 159)  # mmr_adjust_learning_rate, MMR.yaml


# -- network ---------------------------------------------------------------------------------------
def pyramid_branch(dim: int, scale: float, channels: int) -> nn.Sequential:
    """One level of the simple feature pyramid: tokens (dim, h, w) -> (channels, scale h, scale w)."""
    if scale == 4:
        layers = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
                  nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)]
        width = dim // 4
    elif scale == 2:
        layers, width = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)], dim // 2
    elif scale == 1:
        layers, width = [], dim
    else:
        raise ValueError(f"A teacher level at scale {scale} of the patch grid has no pyramid branch: choose "
                         "teacher layers whose strides are patch_size / 4, / 2 or / 1 (e.g. 4, 8, 16 for patch 16).")
    return nn.Sequential(*layers,
                         nn.Conv2d(width, channels, 1, bias=False), LayerNorm2d(channels),
                         nn.Conv2d(channels, channels, 3, padding=1, bias=False), LayerNorm2d(channels))


class MaskedStudent(nn.Module):
    """MAE-style ViT encoder + simple feature pyramid; encoder keys are named as in MAE's checkpoints."""

    def __init__(self, channels: Sequence[int], strides: Sequence[int], embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, patch_size: int = 16, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(img_size=None, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = vit_blocks(embed_dim, depth, num_heads, mlp_ratio)
        self.norm = layer_norm(embed_dim)
        self.fpn_mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pyramid = nn.ModuleList(pyramid_branch(embed_dim, patch_size / stride, c)
                                     for c, stride in zip(channels, strides, strict=True))
        init_mae_weights(self, self.patch_embed, (self.cls_token, self.fpn_mask_token))

    def forward(self, images: torch.Tensor, mask_ratio: float = 0.0) -> list[torch.Tensor]:
        """Normalised images (N, 3, H, W) -> one feature map per teacher level, ``mask_ratio`` of patches hidden."""
        n, _, height, width = images.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"A {height}x{width} image does not split into {self.patch_size}-pixel patches: "
                             f"choose an image size that is a multiple of {self.patch_size}.")
        rows, columns = height // self.patch_size, width // self.patch_size
        tokens = self.patch_embed(images)
        pos = sincos_pos_embed(tokens.shape[-1], rows, columns).to(tokens)
        tokens = tokens + pos
        length, dim = tokens.shape[1:]
        if mask_ratio > 0:  # MAE random masking: keep the patches with the smallest noise
            ids_shuffle = torch.argsort(torch.rand(n, length, device=tokens.device), dim=1)
            ids_restore = torch.argsort(ids_shuffle, dim=1)
            keep = int(length * (1 - mask_ratio))
            tokens = torch.gather(tokens, 1, ids_shuffle[:, :keep, None].expand(-1, -1, dim))
        tokens = torch.cat([self.cls_token.expand(n, -1, -1), tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)[:, 1:]
        if mask_ratio > 0:
            fill = self.fpn_mask_token.expand(n, length - tokens.shape[1], -1)
            tokens = torch.gather(torch.cat([tokens, fill], dim=1), 1, ids_restore[..., None].expand(-1, -1, dim))
        grid = (tokens + pos).transpose(1, 2).reshape(n, dim, rows, columns)
        return [branch(grid) for branch in self.pyramid]


def reconstruction_loss(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
    """Sum over levels of the mean over all pixels of 1 - cos(teacher, student) along channels."""
    return sum(torch.mean(1 - F.cosine_similarity(t, s, dim=1)) for t, s in zip(teacher, student, strict=True))


class MMRNetwork(nn.Module):
    """Frozen teacher + trainable ``student``; ``forward`` gives smoothed maps and image scores (no masking)."""

    def __init__(self, backbone: str, layers: Sequence[str] | None, weights: Weights, embed_dim: int, depth: int,
                 num_heads: int, patch_size: int, seed: int) -> None:
        super().__init__()
        self.teacher = frozen_teacher(backbone, layers, weights, seed)
        with seeded(seed):
            self.student = MaskedStudent(self.teacher.channels, self.teacher.strides, embed_dim, depth, num_heads,
                                         patch_size)

    def distill(self, images: torch.Tensor, mask_ratio: float = 0.0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Teacher features (no gradient) and the student's reconstruction of them from the unmasked patches."""
        with torch.no_grad():
            teacher = self.teacher(images)
        return teacher, self.student(images, mask_ratio)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (N, 3, H, W) -> anomaly maps (N, H, W) and image scores (N,)."""
        teacher, student = self.distill(images)
        maps = gaussian_blur(cosine_distance_map(teacher, student, images.shape[-2:]))
        return maps, maps.flatten(1).amax(dim=1)


# -- student weights -------------------------------------------------------------------------------
def load_student_encoder(student: MaskedStudent, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load an MAE encoder into the student: ``decoder*`` and ``mask_token`` dropped (``scratch_MAE_decoder``),
    ``pos_embed`` dropped (recomputed), ``strict=False``; the pyramid and its mask token stay at their init."""
    kept = {k: v for k, v in state.items() if "decoder" not in k and k not in ("mask_token", "pos_embed")}
    own = student.state_dict()
    if not any(key in own for key in kept):
        raise WeightsUnavailableError(f"{origin} has no tensor of a ViT encoder (keys such as {list(state)[:3]}); "
                                      f"it is not an MAE checkpoint. {WEIGHTS_ADVICE}")
    try:
        missing, unexpected = student.load_state_dict(kept, strict=False)
    except RuntimeError as error:  # shape mismatches: another ViT size
        details = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise WeightsUnavailableError(
            f"{origin} does not fit the student ViT (embed_dim {student.cls_token.shape[-1]}, depth "
            f"{len(student.blocks)}, patch {student.patch_size}): {details} Set embed_dim/depth/num_heads/"
            f"patch_size to the checkpoint's (ViT-B/16: 768/12/12/16). {WEIGHTS_ADVICE}") from error
    missing = [k for k in missing if not k.startswith(("pyramid.", "fpn_mask_token"))]
    if missing or unexpected:
        warnings.warn(f"{origin} loaded into the MMR student with {len(missing)} encoder tensors missing "
                      f"{missing[:5]} and {len(unexpected)} unexpected {unexpected[:5]}.", stacklevel=3)


def student_state(weights: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, where it came from) for ``student_weights='imagenet'`` or a local MAE checkpoint file."""
    if weights == "imagenet":
        try:
            model = timm.create_model(MAE_VIT_BASE, pretrained=True, num_classes=0)
        except Exception as error:
            raise WeightsUnavailableError(f"Could not get the student's MAE weights ({MAE_VIT_BASE}) through "
                                          f"timm: {error}. {WEIGHTS_ADVICE}") from error
        return model.state_dict(), f"timm {MAE_VIT_BASE}"
    path = Path(weights)
    try:
        state = read_state_dict(path)
    except WeightsUnavailableError as error:
        raise WeightsUnavailableError(f"{error} MMR's student_weights expects an MAE checkpoint. "
                                      f"{WEIGHTS_ADVICE}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path} holds no state dict (a dict of tensors, optionally under 'model'). "
                                      f"{WEIGHTS_ADVICE}")
    return state, str(path)


# -- training helpers ------------------------------------------------------------------------------
def lr_factor(epoch: int, epochs: int) -> float:
    """Upstream's per-epoch multiplier of lr, with ``epochs`` mapped onto upstream's 200 (module docstring)."""
    upstream = epoch * UPSTREAM_EPOCHS / epochs
    if upstream < WARMUP_EPOCHS:
        return upstream / WARMUP_EPOCHS
    return 0.1 ** sum(upstream >= decay for decay in DECAY_EPOCHS)


def train_augmentation(size: Sequence[int]) -> T.Compose:
    """RandomResizedCrop(scale 0.7-1, bicubic) + horizontal flip of one normalised image tensor."""
    return T.Compose([T.RandomResizedCrop(tuple(size), scale=(0.7, 1.0), interpolation=InterpolationMode.BICUBIC,
                                          antialias=True),
                      T.RandomHorizontalFlip()])


# -- the model -------------------------------------------------------------------------------------
class MMR(TeacherStudentModel):
    """Frozen CNN teacher, masked ViT student with a feature pyramid; anomaly = where the reconstruction fails."""

    method = "mmr"
    default_sizes = (256, 224)  # upstream test: Resize((256, 256)) -> CenterCrop(224)

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str] | None = None,
        weights: Weights = "imagenet",
        student_weights: Weights = "imagenet",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        patch_size: int = 16,
        mask_ratio: float = 0.4,
        epochs: int = 200,
        batch_size: int = 16,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.95),
        weight_decay: float = 0.05,
        augment: bool = True,
        checkpoint_dir: str | None = None,
        checkpoint_every: int = 10,
        resume: bool = False,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.student_weights = student_weights
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.mask_ratio = mask_ratio
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.betas = betas
        self.weight_decay = weight_decay
        self.augment = augment
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.device = device
        self.seed = seed
        self._network: MMRNetwork | None = None

    # -- network -----------------------------------------------------------------------------------
    def build_network(self, student_weights: Weights) -> MMRNetwork:
        """Teacher and student on the resolved device, the student's encoder from ``student_weights``."""
        network = MMRNetwork(self.backbone, self.layers, self.weights, self.embed_dim, self.depth, self.num_heads,
                             self.patch_size, self.seed)
        student_weights = parse_weights(student_weights)
        if student_weights is not None:
            load_student_encoder(network.student, *student_state(student_weights))
        return network.to(resolve_device(self.device)).eval()

    @property
    def network(self) -> MMRNetwork:
        """Built on first use, with the configured student initialisation."""
        if self._network is None:
            self._network = self.build_network(self.student_weights)
        return self._network

    # -- fit ---------------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, progress: bool = True) -> "MMR":
        """Train the student to rebuild the teacher's features of normal images from masked views."""
        size = self.start_fit(dataset)
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1) (upstream trains with 0.4), got {self.mask_ratio}")
        self._network = None
        network, device = self.network, self.torch_device
        loader, shuffling = shuffled_loader(dataset, self.batch_size, self.seed)
        optimizer = torch.optim.AdamW(param_groups_weight_decay(network.student, self.weight_decay), lr=self.lr,
                                      betas=tuple(self.betas))
        steps = len(loader)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step // steps, self.epochs))
        augment = train_augmentation(size) if self.augment else None

        def loss_of_batch(batch: dict) -> torch.Tensor:
            images = batch["image"].to(device)
            if augment is not None:
                images = torch.stack([augment(image) for image in images])
            return reconstruction_loss(*network.distill(images, self.mask_ratio))

        checkpoints = checkpoint_folder(self.checkpoint_dir, dataset)
        # masking noise and crops come from torch's global RNG: seed it here, leave the caller's state as it was
        with seeded(self.seed, devices=[device]):
            self.losses_ = train_epochs(network.student, optimizer, lambda: loader, loss_of_batch, self.epochs,
                                        scheduler=scheduler, checkpoint_dir=checkpoints,
                                        checkpoint_every=self.checkpoint_every, resume=self.resume,
                                        progress=progress, description=self.progress_label(dataset),
                                        settings=self.training_settings(), generators=[shuffling])
        self.image_size_ = size
        return self

    # -- persistence -------------------------------------------------------------------------------
    def learned_values(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size_), "losses": self.losses_}

    def load_learned(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        self._network = self.build_network(None)  # the saved student replaces any initialisation: fetch none
        self._network.student.load_state_dict(tensors)
        self.image_size_ = tuple(values["image_size"])
        self.losses_ = list(values["losses"])

