"""MAE + LoRA: a masked autoencoder ViT whose attention layers carry LoRA adapters, trained to rebuild hidden
patches of normal images; a defect is what it cannot rebuild. After LucFrachon/mae-ad (a personal work-in-progress
project with no paper and no evaluation code; read at models_mae.py @ 3696809, lora_layers.py @ 51a5fcb,
main_train.py @ 0ed3fca, README.md @ b7500f6; details in docs/mae_lora.md).

Faithful to the original unless noted:

- network (``models_mae.py``, from facebookresearch/mae): timm ViT ``Block``s (qkv bias, LayerNorm eps 1e-6, MLP
  ratio 4), a learnable cls token, fixed 2-D sin-cos position embeddings for the patch grid (MAE's layout, so MAE
  weights fit), a decoder of its own blocks after a linear ``decoder_embed`` and a learned mask token, and
  ``decoder_pred`` to patch pixels. Default ``mae_vit_large_patch7``: ViT-L encoder (1024 wide, 24 blocks,
  16 heads), decoder 512 wide, 8 blocks, 16 heads, 7-px patches, so a 224-px image is a 32 x 32 grid. MAE's init:
  xavier-uniform linear layers and patch embedding, tokens N(0, 0.02).
- weights: ``None`` (random init, seeded) or a local MAE checkpoint (``{"model": state_dict}`` as published by
  facebookresearch/mae). A patch embedding or pixel head of another patch size is re-initialised with a warning
  (the original deletes the mismatched ``patch_embed.proj.weight``); ``mae_pretrain_vit_*.pth`` holds the encoder
  only (facebookresearch/mae issues #8, #191), so the decoder then starts random, also with a warning.
- LoRA (``lora_layers.py``: loralib ``Linear`` for ``attn.qkv`` and ``attn.proj`` in every encoder and decoder
  block) via peft: rank ``lora_rank`` 4 (``--lora_rank 4`` in the README command), scaling ``lora_alpha / r`` with
  loralib's default alpha 1, A Kaiming-uniform and B zero (so training starts from the base network), base
  weights frozen. ``trainable="lora"`` is the README's ``--freeze_non_lora``: inside the blocks only the adapters
  train; outside them the patch embedding, cls and mask tokens, norms, ``decoder_embed`` and ``decoder_pred`` train
  too (they are new whenever the patch size differs). ``trainable="lora+decoder"`` also trains the decoder blocks.
- training (``main_train.py``, ``engine_pretrain.py``): 75 % random masking per image (MAE's argsort of noise);
  MSE on the hidden patches only, targets normalised per patch (``--norm_pix_loss``, in the README command);
  AdamW (betas 0.9, 0.95; weight decay 0.001, none on biases and norms: timm's
  ``param_groups_weight_decay``), ``lr = blr * batch_size / 256``
  with ``blr`` 1e-2 (README command), 40 warm-up epochs then a half-cycle cosine to ``min_lr`` 0, stepped per
  batch; batch 32; 400 epochs (code default; the README trains 4000). Here: no ``drop_last`` (a category has
  fewer images than a batch), no resize-and-random-crop augmentation (the workshop's fixed transforms), bfloat16
  autocast on CUDA instead of float16 with a gradient scaler. The original ignores its ``--train_mask_ratio``
  flag (the model keeps its constructor default); here ``train_mask_ratio`` is used.
- inference (``get_mask``, ``alternate_masking``): ``inference_masks`` (4) deterministic complementary masks;
  mask i hides the patches whose flat index is i modulo 4 (every 4th column of the original's 32 x 32 grid; a
  diagonal stagger on grids whose width is not a multiple of 4, e.g. 14 x 14 for 16-px patches at 224 px), so each
  patch is hidden exactly once, and each pixel's error is taken from the pass in which it was hidden. The patch
  count must be a multiple of the mask count (the original asserts it).
- map: squared error between the image and its reconstruction (predictions de-normalised with the hidden patch's
  own mean and standard deviation when ``norm_pix_loss``), averaged over RGB, Gaussian-smoothed with
  ``smoothing_sigma`` 5 (the original's ``make_gaussian_kernel(11, 5)``; here the kernel has scipy's radius
  4 sigma and reflect padding, so the map keeps the image's size); image score = the maximum of that image's map.
  The original's ``2 (sigmoid(x) - 0.5)`` squashing is left out: it is monotone, so no AUROC changes.

Bugs of the original, fixed here and tested in tests/test_mae_lora.py:

1. ``get_mask``: ``len_keep = int(patches_per_side * (1 - 0.25))`` = 24 where ``L * (1 - 0.25)`` = 768 was meant:
   at inference the encoder saw 24 of 1024 patches, nearly the whole image hidden. Here each pass keeps
   ``L - L / inference_masks`` patches.
2. ``inference``: ``anomaly_scores = loss_maps.max()`` over the whole batch tensor, so every image of a batch got
   the batch's highest score. Here each image's score is the maximum of its own map.
3. With ``norm_pix_loss`` the original de-normalises predictions as ``(pred + mean) * std`` instead of
   ``pred * std + mean`` and then compares them with re-normalised targets (mismatched spaces). Here the error
   is computed between the image and the correctly de-normalised reconstruction.
"""

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, inject_adapter_in_model
from timm.layers import PatchEmbed
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.utils.data import Dataset

from ..backbones import Weights, parse_weights, read_state_dict
from ..device import resolve_device
from ..errors import ModelFileError, WeightsUnavailableError
from ..maps import gaussian_blur
from ..seeding import seeded
from ..training import checkpoint_folder, count_parameters, shuffled_loader, train_epochs
from .base import AnomalyModel, ModelOutput
from .components.vit import init_mae_weights, layer_norm, sincos_pos_embed, vit_blocks

NORM_PIX_EPS = 1e-6  # MAE's (var + 1e-6) ** 0.5
LORA_TARGETS = r".*blocks\.\d+\.attn\.(qkv|proj)"  # not patch_embed.proj, which is a Conv2d outside the blocks
TRAINABLE_CHOICES = ("lora", "lora+decoder")


@dataclass(frozen=True)
class ViTSize:
    """Widths, depths and heads of the encoder and the decoder."""

    embed_dim: int
    depth: int
    num_heads: int
    decoder_embed_dim: int
    decoder_depth: int
    decoder_num_heads: int
    mlp_ratio: float = 4.0


ARCHITECTURES = {
    "vit_large": ViTSize(1024, 24, 16, 512, 8, 16),  # models_mae.py: mae_vit_large_patch7 / _patch16_dec512d8b
    "vit_base": ViTSize(768, 12, 12, 512, 8, 16),  # models_mae.py: mae_vit_base_patch16_dec512d8b
    "vit_tiny": ViTSize(192, 4, 3, 128, 2, 4),  # not in the original: a CPU-sized workshop model
    "vit_micro": ViTSize(64, 2, 2, 64, 1, 2),  # not in the original: seconds per epoch, for CI
}


# -- geometry --------------------------------------------------------------------------------------
def patch_grid(image_size: Sequence[int], patch_size: int, inference_masks: int) -> tuple[int, int]:
    """(rows, columns) of patches, or a ValueError naming an image size that works."""
    height, width = int(image_size[0]), int(image_size[1])
    if height % patch_size or width % patch_size:
        raise ValueError(f"A {height}x{width} image does not split into {patch_size}-px patches: choose an image "
                         f"size that is a multiple of patch_size={patch_size} (e.g. --imagesize "
                         f"{max(1, round(width / patch_size)) * patch_size}).")
    rows, columns = height // patch_size, width // patch_size
    if inference_masks < 2 or (rows * columns) % inference_masks:
        step = patch_size * inference_masks
        raise ValueError(
            f"The {rows} x {columns} patch grid ({height}x{width} px, {patch_size}-px patches) does not split "
            f"evenly into {inference_masks} masks (inference_masks >= 2 must divide the {rows * columns} patches): "
            f"choose an image width that is a multiple of patch_size x inference_masks = {step} (e.g. "
            f"{max(1, round(width / step)) * step}), or another patch size."
        )
    return rows, columns


def inference_masks(rows: int, columns: int, count: int = 4) -> torch.Tensor:
    """(count, rows * columns) bool, True = hidden: mask i hides the patches whose flat index is i mod count
    (every count-th column when count divides the width), so the masks are complementary and each hides
    1 / count of the patches."""
    if count < 2 or (rows * columns) % count:
        raise ValueError(f"{count} masks need a patch count divisible by {count}, got {rows} x {columns}")
    index = torch.arange(rows * columns)
    return torch.stack([index % count == i for i in range(count)])


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, L, p * p * 3), patches row-major, pixels (row, column, channel) as MAE."""
    n, c, h, w = images.shape
    p = patch_size
    x = images.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, rows: int, columns: int) -> torch.Tensor:
    """The inverse of ``patchify``: (N, L, p * p * 3) -> (N, 3, rows * p, columns * p)."""
    n, p = patches.shape[0], patch_size
    x = patches.reshape(n, rows, columns, p, p, -1).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(n, -1, rows * p, columns * p)


def patch_statistics(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean and standard deviation (unbiased variance + eps, as MAE's norm_pix_loss)."""
    mean = patches.mean(dim=-1, keepdim=True)
    return mean, (patches.var(dim=-1, keepdim=True) + NORM_PIX_EPS).sqrt()


def random_keep(batch: int, length: int, mask_ratio: float, generator: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """(batch, kept) indices of the visible patches: MAE's per-image argsort of uniform noise."""
    kept = int(length * (1 - mask_ratio))
    if not 0 < kept < length:
        raise ValueError(f"train_mask_ratio={mask_ratio} keeps {kept} of {length} patches; use a ratio in (0, 1)")
    noise = torch.rand(batch, length, generator=generator, device=generator.device).to(device)
    return noise.argsort(dim=1)[:, :kept]


# -- network ---------------------------------------------------------------------------------------
class MaskedAutoencoder(nn.Module):
    """MAE's ViT encoder and decoder (module names as facebookresearch/mae's, so its checkpoints load)."""

    def __init__(self, size: ViTSize, image_size: Sequence[int], patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = (int(image_size[0]) // patch_size, int(image_size[1]) // patch_size)
        self.patch_embed = PatchEmbed(tuple(image_size), patch_size, 3, size.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, size.embed_dim))
        self.register_buffer("pos_embed", sincos_pos_embed(size.embed_dim, *self.grid)[None], persistent=False)
        self.blocks = vit_blocks(size.embed_dim, size.depth, size.num_heads, size.mlp_ratio)
        self.norm = layer_norm(size.embed_dim)
        self.decoder_embed = nn.Linear(size.embed_dim, size.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, size.decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(size.decoder_embed_dim, *self.grid)[None],
                             persistent=False)
        self.decoder_blocks = vit_blocks(size.decoder_embed_dim, size.decoder_depth, size.decoder_num_heads,
                                         size.mlp_ratio)
        self.decoder_norm = layer_norm(size.decoder_embed_dim)
        self.decoder_pred = nn.Linear(size.decoder_embed_dim, patch_size * patch_size * 3)
        # MAE's init; the cls token's position embedding is zero, so omitted. The patch projection's bias is zeroed
        # too (as this model always did).
        init_mae_weights(self, self.patch_embed, (self.cls_token, self.mask_token))
        nn.init.zeros_(self.patch_embed.proj.bias)

    def encode(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) and visible patch indices (N, K) -> latents (N, 1 + K, D), cls first."""
        x = self.patch_embed(images) + self.pos_embed
        x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def decode(self, latents: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Latents of the visible patches -> pixel predictions for all L patches (N, L, p * p * 3)."""
        x = self.decoder_embed(latents)
        n, length = len(x), self.decoder_pos_embed.shape[1]
        tokens = self.mask_token.to(x.dtype).expand(n, length, -1).clone()
        tokens = tokens.scatter(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x[:, 1:])
        x = torch.cat([x[:, :1], tokens + self.decoder_pos_embed], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images, keep), keep)


def load_mae_weights(network: MaskedAutoencoder, path: str | Path) -> None:
    """Load a facebookresearch/mae checkpoint into ``network`` (before LoRA is added), warning about what is new.

    Position embeddings are fixed sin-cos and recomputed for this grid; a patch embedding or pixel head of another
    patch size is re-initialised; a missing decoder (encoder-only ``mae_pretrain_*`` files) stays random.
    """
    path = Path(path)
    state = {k: v for k, v in read_state_dict(path).items() if k not in ("pos_embed", "decoder_pos_embed")}
    own = network.state_dict()
    resized = [k for k in ("patch_embed.proj.weight", "decoder_pred.weight", "decoder_pred.bias")
               if k in state and state[k].shape != own[k].shape]
    if resized:
        p = network.patch_size
        warnings.warn(f"{path}: {', '.join(resized)} were made for another patch size "
                      f"({tuple(state[resized[0]].shape)} vs {tuple(own[resized[0]].shape)}); they are re-initialised "
                      f"for {p}x{p} patches and must be trained (trainable='lora' trains them).", stacklevel=3)
        for key in resized:
            del state[key]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    if mismatched:
        key = mismatched[0]
        raise WeightsUnavailableError(
            f"{path} does not fit this architecture: {key} is {tuple(state[key].shape)} in the file, "
            f"{tuple(own[key].shape)} here. Choose the architecture of the checkpoint "
            f"({', '.join(ARCHITECTURES)}).")
    missing = [k for k in own if k not in state and k not in resized]
    missing_encoder = [k for k in missing if not k.startswith(("decoder_", "mask_token"))]
    if missing_encoder:
        raise WeightsUnavailableError(f"{path} is not a MAE checkpoint of this architecture: {len(missing_encoder)} "
                                      f"encoder tensors are missing (e.g. {missing_encoder[:3]}).")
    if missing:
        warnings.warn(f"{path} has no decoder weights ({len(missing)} tensors, e.g. {missing[0]}): the decoder "
                      "starts random. mae_visualize_vit_*.pth or mae_pretrain_vit_*_full.pth include it.",
                      stacklevel=3)
    network.load_state_dict(state, strict=False)


def add_lora(network: MaskedAutoencoder, rank: int, alpha: float, trainable: str) -> MaskedAutoencoder:
    """LoRA on every block's ``attn.qkv`` and ``attn.proj`` (peft); freeze what ``trainable`` does not train."""
    if trainable not in TRAINABLE_CHOICES:
        raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {trainable!r}")
    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none", target_modules=LORA_TARGETS)
    inject_adapter_in_model(config, network)
    for name, parameter in network.named_parameters():
        in_blocks = name.startswith(("blocks.", "decoder_blocks."))
        parameter.requires_grad = ("lora_" in name or not in_blocks
                                   or (trainable == "lora+decoder" and name.startswith("decoder_blocks.")))
    return network


def base_fingerprint(network: nn.Module) -> float:
    """Sum of the frozen weights: tells whether a rebuilt base network is the one the adapters were trained on."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum().cpu() for p in network.parameters() if not p.requires_grad))


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """util/lr_sched.py's factor: linear warm-up from 0, then a half-cycle cosine down to ``min_ratio``."""
    if step < warmup_steps:
        return step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class Reconstruction:
    """What the 4 inference passes give for a batch: the stitched reconstruction and the raw error map."""

    images: torch.Tensor  # (N, 3, H, W) normalised input
    reconstruction: torch.Tensor  # (N, 3, H, W) each patch from the pass in which it was hidden
    error: torch.Tensor  # (N, H, W) squared error averaged over RGB, before smoothing
    masks: torch.Tensor  # (M, rows, columns) bool, True = hidden in pass m


# -- the model -------------------------------------------------------------------------------------
class MAELoRA(AnomalyModel):
    """Masked autoencoder + LoRA; anomaly = reconstruction error of hidden patches (module docstring)."""

    method = "mae-lora"
    default_sizes = (224, 224)  # 224-px images, 32 x 32 patches of 7 px

    def __init__(
        self,
        architecture: str = "vit_large",
        patch_size: int = 7,
        weights: Weights = None,
        lora_rank: int = 4,
        lora_alpha: float = 1.0,
        trainable: str = "lora",
        train_mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        inference_masks: int = 4,
        smoothing_sigma: float = 5.0,
        epochs: int = 400,
        batch_size: int = 32,
        lr: float | None = None,
        blr: float = 1e-2,
        min_lr: float = 0.0,
        warmup_epochs: int = 40,
        weight_decay: float = 0.001,
        checkpoint_dir: str | None = None,
        checkpoint_every: int = 50,
        resume: bool = False,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self.architecture = architecture
        self.patch_size = patch_size
        self.weights = weights
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.trainable = trainable
        self.train_mask_ratio = train_mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.inference_masks = inference_masks
        self.smoothing_sigma = smoothing_sigma
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.blr = blr
        self.min_lr = min_lr
        self.warmup_epochs = warmup_epochs
        self.weight_decay = weight_decay
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.device = device
        self.seed = seed
        self._network: MaskedAutoencoder | None = None

    # -- network -----------------------------------------------------------------------------------
    def build_network(self, image_size: Sequence[int]) -> MaskedAutoencoder:
        """The seeded MAE (MAE weights loaded when a file is given) with LoRA, on the resolved device."""
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"Unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        patch_grid(image_size, self.patch_size, self.inference_masks)
        weights = parse_weights(self.weights)
        if weights == "imagenet":
            raise WeightsUnavailableError("MAE + LoRA takes weights=None (random init) or a local MAE checkpoint "
                                          "file (e.g. mae_pretrain_vit_large.pth from facebookresearch/mae), "
                                          "not 'imagenet'.")
        with seeded(self.seed):  # base and adapters reproducible from the seed
            network = MaskedAutoencoder(ARCHITECTURES[self.architecture], image_size, self.patch_size)
            if weights is not None:
                load_mae_weights(network, weights)
            add_lora(network, self.lora_rank, self.lora_alpha, self.trainable)
        return network.to(resolve_device(self.device)).eval()

    @property
    def network(self) -> MaskedAutoencoder:
        self.check_fitted()
        if self._network is None:
            self._network = self.build_network(self.image_size_)
        return self._network

    @property
    def torch_device(self) -> torch.device:
        return self.network.cls_token.device

    def autocast(self, device: torch.device) -> torch.autocast:
        """bfloat16 on CUDA (the original uses float16 autocast); full precision elsewhere."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.blr * self.batch_size / 256

    # -- fit ---------------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, progress: bool = True) -> "MAELoRA":
        """Train the adapters (and heads) to rebuild randomly hidden patches of the normal training images."""
        size = self.start_fit(dataset)
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be in [0, epochs={self.epochs}): "
                             f"pass e.g. --warmup_epochs {self.epochs // 10}")
        network = self.build_network(size)
        device = network.cls_token.device
        loader, shuffling = shuffled_loader(dataset, self.batch_size, self.seed)
        lr = self.learning_rate()
        optimizer = torch.optim.AdamW(param_groups_weight_decay(network, self.weight_decay), lr=lr, betas=(0.9, 0.95))
        steps = len(loader)
        schedule = partial(warmup_cosine, warmup_steps=self.warmup_epochs * steps, total_steps=self.epochs * steps,
                           min_ratio=self.min_lr / lr if lr > 0 else 0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        masking = torch.Generator(device=device).manual_seed(self.seed)
        length = network.grid[0] * network.grid[1]

        def loss_of_batch(batch: dict) -> torch.Tensor:
            images = batch["image"].to(device)
            keep = random_keep(len(images), length, self.train_mask_ratio, masking, device)
            with self.autocast(device):
                prediction = network(images, keep).float()
            return self.masked_loss(images, prediction, keep)

        self.losses_ = train_epochs(network, optimizer, lambda: loader, loss_of_batch, self.epochs, scheduler,
                                    checkpoint_dir=checkpoint_folder(self.checkpoint_dir, dataset),
                                    checkpoint_every=self.checkpoint_every, resume=self.resume, progress=progress,
                                    description=self.progress_label(dataset), settings=self.training_settings(),
                                    generators=[shuffling, masking])
        self.image_size_ = size
        self.base_fingerprint_ = base_fingerprint(network)
        self._network = network.eval()
        return self

    def masked_loss(self, images: torch.Tensor, prediction: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """MSE over the hidden patches only, each patch's error averaged over its pixels (MAE's forward_loss)."""
        target = patchify(images, self.patch_size)
        if self.norm_pix_loss:
            mean, std = patch_statistics(target)
            target = (target - mean) / std
        per_patch = ((prediction - target) ** 2).mean(dim=-1)
        hidden = torch.ones_like(per_patch).scatter(1, keep, 0.0)
        return (per_patch * hidden).sum() / hidden.sum()

    # -- predict -----------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> Reconstruction:
        """One pass per inference mask; each patch's reconstruction comes from the pass that hid it."""
        network = self.network.eval()
        device = self.torch_device
        images = images.to(device)
        if tuple(images.shape[-2:]) != tuple(self.image_size_):
            raise ValueError(f"This model was trained on {self.image_size_[0]}x{self.image_size_[1]} images, got "
                             f"{images.shape[-2]}x{images.shape[-1]}: load the test set with the same imagesize.")
        rows, columns = network.grid
        hidden = inference_masks(rows, columns, self.inference_masks).to(device)
        target = patchify(images, self.patch_size)
        combined = torch.zeros_like(target)
        for mask in hidden:
            keep = (~mask).nonzero()[:, 0].expand(len(images), -1)  # L - L / M visible patches (original bug 1)
            with self.autocast(device):
                prediction = network(images, keep).float()
            combined = torch.where(mask[None, :, None], prediction, combined)
        if self.norm_pix_loss:
            mean, std = patch_statistics(target)
            combined = combined * std + mean  # original bug 3: (pred + mean) * std
        reconstruction = unpatchify(combined, self.patch_size, rows, columns)
        error = ((reconstruction - images) ** 2).mean(dim=1)
        return Reconstruction(images, reconstruction, error, hidden.reshape(-1, rows, columns))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> ModelOutput:
        """Image scores (N,) and anomaly maps (N, H, W); each score is the max of its own map (original bug 2)."""
        maps = gaussian_blur(self.reconstruct(images).error, self.smoothing_sigma)
        return ModelOutput(maps.flatten(1).amax(dim=1).cpu().numpy().astype(np.float32),
                           maps.cpu().numpy().astype(np.float32))

    # -- information -------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Trainable and frozen parameters, and how many of the trainable ones are LoRA adapters."""
        network = self.network
        lora = sum(p.numel() for n, p in network.named_parameters() if "lora_" in n)
        return {"trainable": count_parameters(network), "frozen": count_parameters(network, trainable=False),
                "lora": lora}

    # -- persistence -------------------------------------------------------------------------------
    def learned_tensors(self) -> dict[str, torch.Tensor]:
        """Only what trained (adapters, heads); the frozen base is rebuilt from architecture, weights and seed."""
        return {n: p.detach() for n, p in self.network.named_parameters() if p.requires_grad}

    def learned_values(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size_), "losses": self.losses_,
                "base_fingerprint": self.base_fingerprint_}

    def load_learned(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        self.image_size_ = tuple(values["image_size"])
        self.losses_ = list(values["losses"])
        self.base_fingerprint_ = float(values["base_fingerprint"])
        self._network = None
        network = self.network
        expected = {n for n, p in network.named_parameters() if p.requires_grad}
        if set(tensors) != expected:
            raise ModelFileError(f"The saved tensors do not match the trainable parameters of this configuration "
                                 f"({len(tensors)} saved, {len(expected)} expected): the model folder is damaged.")
        rebuilt = base_fingerprint(network)
        if not math.isclose(rebuilt, self.base_fingerprint_, rel_tol=1e-6, abs_tol=1e-3):
            raise ModelFileError(
                f"The frozen base network rebuilt from weights={self.weights!r} and seed={self.seed} is not the one "
                f"the adapters were trained on (weight sum {rebuilt:.6g} vs {self.base_fingerprint_:.6g}): use the "
                "same MAE checkpoint file (unchanged) as in training.")
        network.load_state_dict(tensors, strict=False)

