"""The ViT parts shared by MMR's student and MAE + LoRA: MAE's fixed position table, its blocks and its init
(facebookresearch/mae ``models_mae.py``, ``util/pos_embed.py``; MMR reuses them in ``models/MMR/MMR.py``)."""

from collections.abc import Sequence
from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

LAYER_NORM_EPS = 1e-6  # MAE's partial(nn.LayerNorm, eps=1e-6)


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


def vit_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0) -> nn.ModuleList:
    """``depth`` timm ViT blocks as MAE builds them: qkv bias, LayerNorm eps 1e-6."""
    norm = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)
    return nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth))


def sincos_pos_embed(dim: int, rows: int, columns: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table (``get_2d_sincos_pos_embed``) for a rows x columns grid, (rows * columns, dim),
    row-major: the first half of the channels encodes the column index, the second the row index, each as
    [sin, cos] of ``pos / 10000 ** (i / (dim / 4))``, as in MAE's checkpoints. A position's code does not depend on
    the grid, so any grid works."""
    if dim % 4:
        raise ValueError(f"embed dims must be a multiple of 4 for the 2-D sin-cos position table, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    row, column = torch.meshgrid(torch.arange(rows, dtype=torch.float64),
                                 torch.arange(columns, dtype=torch.float64), indexing="ij")

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(column), encode(row)], dim=1).float()


def init_mae_weights(module: nn.Module, patch_embed: PatchEmbed, tokens: Sequence[nn.Parameter]) -> None:
    """MAE's ``initialize_weights``: xavier-uniform Linear layers with zero bias, unit/zero LayerNorms, the patch
    projection xavier-uniform as a linear map (its bias at torch's default), ``tokens`` (cls, mask) N(0, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    weight = patch_embed.proj.weight.data
    nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
    for token in tokens:
        nn.init.normal_(token, std=0.02)
