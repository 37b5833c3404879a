"""Anomaly maps from feature distances, their Gaussian smoothing, and image tiling (sliding-window mode).

Everything here is plain torch, so a map is computed on the model's device and can be exported to ONNX with
the network. ``gaussian_blur`` reproduces ``scipy.ndimage.gaussian_filter(map, sigma, truncate=4.0)`` (its
default ``mode='reflect'``, kernel radius ``int(truncate * sigma + 0.5)``), the smoothing of RD4AD
(hq-deng/RD4AD: test.py) and MMR (zhangzilongc/MMR: models/MMR/utils.py), to float32 precision.
"""

import torch
import torch.nn.functional as F

SMOOTHING_SIGMA = 4.0  # RD4AD, MMR and PatchCore upstream
TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default


def gaussian_kernel1d(sigma: float = SMOOTHING_SIGMA, truncate: float = TRUNCATE) -> torch.Tensor:
    """scipy's normalised 1-D Gaussian weights, radius ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return (weights / weights.sum()).float()


def reflect_pad(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Mirror ``radius`` samples at both ends of ``dim``, the edge sample included (scipy 'reflect',
    numpy 'symmetric'); repeated when the map is shorter than the radius, as scipy does."""
    remaining = radius
    while remaining > 0:
        step = min(remaining, x.shape[dim])
        head = x.narrow(dim, 0, step).flip(dim)
        tail = x.narrow(dim, x.shape[dim] - step, step).flip(dim)
        x = torch.cat([head, x, tail], dim)
        remaining -= step
    return x


def gaussian_blur(maps: torch.Tensor, sigma: float = SMOOTHING_SIGMA, truncate: float = TRUNCATE) -> torch.Tensor:
    """Smooth (N, H, W) maps with a separable Gaussian, as scipy.ndimage.gaussian_filter does per map."""
    kernel = gaussian_kernel1d(sigma, truncate).to(maps.device, maps.dtype)
    radius = (len(kernel) - 1) // 2
    x = reflect_pad(reflect_pad(maps.unsqueeze(1), radius, -1), radius, -2)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def cosine_distance_map(teacher: list[torch.Tensor], student: list[torch.Tensor],
                        size: tuple[int, int]) -> torch.Tensor:
    """Per level ``1 - cos`` along channels, bilinearly upsampled (align_corners=True) to ``size``, summed over
    levels: RD4AD's ``cal_anomaly_map(..., amap_mode='a')`` before smoothing. Returns (N, H, W)."""
    return upsample_sum([1 - F.cosine_similarity(t, s, dim=1) for t, s in zip(teacher, student, strict=True)], size)


def upsample_sum(level_maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Per-level (N, h, w) score maps, bilinearly upsampled (align_corners=True) to ``size`` and summed over
    levels: the aggregation of RD4AD, MMR and ResAD before smoothing. Returns (N, H, W)."""
    return sum(F.interpolate(m.unsqueeze(1), size=size, mode="bilinear", align_corners=True)[:, 0]
               for m in level_maps)


def check_tiling(height: int, width: int, rows: int, columns: int, multiple: int = 1) -> tuple[int, int]:
    """The tile size of a ``rows`` x ``columns`` grid, or a ValueError saying which image size would work."""
    if rows < 1 or columns < 1:
        raise ValueError(f"patches per row/column must be >= 1, got {columns} x {rows}")
    tile_h, tile_w = height // rows, width // columns
    if height % rows or width % columns or tile_h % multiple or tile_w % multiple:
        raise ValueError(
            f"A {height}x{width} image does not split into {rows} rows x {columns} columns of tiles whose sides "
            f"are multiples of {multiple}: choose an image size divisible by {rows * multiple} (height) and "
            f"{columns * multiple} (width)."
        )
    return tile_h, tile_w


def split_tiles(images: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """(N, C, H, W) -> (N * rows * columns, C, H / rows, W / columns): non-overlapping tiles, row-major per image."""
    n, c, h, w = images.shape
    tile_h, tile_w = check_tiling(h, w, rows, columns)
    tiles = images.reshape(n, c, rows, tile_h, columns, tile_w).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(n * rows * columns, c, tile_h, tile_w)


def stitch_tiles(tiles: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """The exact inverse of ``split_tiles``: (N * rows * columns, C, h, w) -> (N, C, rows * h, columns * w)."""
    count, c, tile_h, tile_w = tiles.shape
    if count % (rows * columns):
        raise ValueError(f"{count} tiles are not a whole number of {rows} x {columns} grids")
    n = count // (rows * columns)
    grid = tiles.reshape(n, rows, columns, c, tile_h, tile_w).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(n, c, rows * tile_h, columns * tile_w)
