"""How an image on disk becomes a network input (and a map goes back onto the image): ``Preprocessing``.

Three geometries, the same for every method, dataset, flag and notebook:

- ``crop="center"``: the shorter side resized to ``resize``, then a centre crop of ``imagesize``. Upstream
  PatchCore's protocol for MVTec AD (square images); on non-square frames it throws the sides away.
- ``crop="none"``: the whole frame resized to ``imagesize`` (anomalib's ``Resize(S, S)``): nothing is lost, the
  aspect ratio changes.
- ``crop="pad"``: the longer side resized to ``imagesize``, then letterboxed to ``imagesize`` with the ImageNet mean
  colour (0 after normalisation); pixel metrics are computed on the real pixels only.

``imagesize`` is a side (square) or ``(height, width)``; ``resize`` matters only for ``center``. Masks follow the
image's geometry and are binarised: any non-zero mask value marks a defect (0/1, 0/255, boolean and palette exports
all work), then after resizing a pixel is a defect where at least half of it was (upstream casts the bilinear mask
with ``astype(int)``, which drops every border pixel below 1.0).
"""

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2 as T
from torchvision.transforms.functional import InterpolationMode

# torchvision's ImageNet statistics, used by every pretrained backbone of the library.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROPS = ("center", "none", "pad")


@dataclass(frozen=True)
class Placement:
    """Where the original image lands in the network input: it is scaled to ``scaled`` (height, width) and its top
    left corner sits at ``offset`` (row, column) of the input, negative where a centre crop cut it."""

    scaled: tuple[int, int]
    offset: tuple[int, int]


@dataclass(frozen=True)
class Preprocessing:
    """Resize, crop or letterbox to the network's input size (module docstring)."""

    resize: int = 256
    imagesize: int | tuple[int, int] = 224
    crop: str = "center"

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {self.crop!r} (--crop)")
        height, width = self.size
        if min(height, width, self.resize) < 1:
            raise ValueError(f"image sizes must be positive, got resize={self.resize}, imagesize={self.imagesize}")
        if self.crop == "center" and self.resize < max(height, width):
            raise ValueError(f"--resize ({self.resize}) must be >= --imagesize ({max(height, width)}) with "
                             "crop='center': the centre crop is taken from the resized image. Pass a larger "
                             "--resize, or crop='none' / 'pad' (--crop), which resize the whole frame.")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        if isinstance(self.imagesize, int):
            return self.imagesize, self.imagesize
        height, width = self.imagesize
        return int(height), int(width)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, as models save it."""
        values = asdict(self)
        values["imagesize"] = self.imagesize if isinstance(self.imagesize, int) else list(self.size)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Preprocessing":
        size = values["imagesize"]
        return cls(int(values["resize"]), size if isinstance(size, int) else tuple(size), values.get("crop", "center"))

    def describe(self) -> str:
        height, width = self.size
        if self.crop == "center":
            return f"shorter side {self.resize} px, centre crop {height}x{width}"
        return f"{'whole frame' if self.crop == 'none' else 'letterboxed'} to {height}x{width}"

    def placement(self, original: tuple[int, int]) -> Placement:
        """Where an original image of (height, width) lands in the input (the same arithmetic as the transforms)."""
        height, width = self.size
        original_height, original_width = original
        if self.crop == "none":
            return Placement((height, width), (0, 0))
        if self.crop == "pad":
            scale = min(height / original_height, width / original_width)
            scaled = (max(1, round(original_height * scale)), max(1, round(original_width * scale)))
            return Placement(scaled, ((height - scaled[0]) // 2, (width - scaled[1]) // 2))
        scaled = shorter_side_size(original, self.resize)  # torchvision's Resize(int) rule
        # torchvision's center_crop: top = int(round((H - h) / 2.0))
        return Placement(scaled, (-int(round((scaled[0] - height) / 2.0)), -int(round((scaled[1] - width) / 2.0))))

    def valid_box(self, original: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the input pixels that come from the image (all but a letterbox's bars)."""
        placement = self.placement(original)
        height, width = self.size
        top, left = max(0, placement.offset[0]), max(0, placement.offset[1])
        bottom = min(height, placement.offset[0] + placement.scaled[0])
        right = min(width, placement.offset[1] + placement.scaled[1])
        return top, left, bottom - top, right - left

    def image_transform(self) -> T.Compose:
        """PIL image -> normalised float tensor (3, height, width)."""
        return T.Compose([T.PILToTensor(), Geometry(self, InterpolationMode.BILINEAR, antialias=True),
                          T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                          Letterbox(self)])

    def mask_transform(self) -> T.Compose:
        """PIL mask -> binary float tensor (1, height, width): non-zero = defect, then resized and cut at 0.5."""
        return T.Compose([T.PILToTensor(), Binarize(0), Geometry(self, InterpolationMode.BILINEAR, antialias=False),
                          Binarize(0.5), Letterbox(self)])

    def display_transform(self) -> T.Compose:
        """PIL image -> uint8 (3, height, width): the input as the network saw it, for plots."""
        return T.Compose([T.PILToTensor(), Geometry(self, InterpolationMode.BILINEAR, antialias=True),
                          Letterbox(self, value=255)])

    def to_original(self, network_map: np.ndarray, original: tuple[int, int]) -> np.ndarray:
        """A (height, width) map of the network input placed back onto the original image's (H, W) pixels,
        bilinearly; NaN where the network never looked (outside a centre crop)."""
        placement = self.placement(original)
        height, width = self.size
        # the part of the scaled image that the input holds, in the scaled image's coordinates
        canvas = np.full(placement.scaled, np.nan, dtype=np.float32)
        top, left, box_height, box_width = self.valid_box(original)
        source_top, source_left = top - placement.offset[0], left - placement.offset[1]
        canvas[source_top: source_top + box_height, source_left: source_left + box_width] = \
            network_map[top: top + box_height, left: left + box_width]
        seen = torch.from_numpy(np.isfinite(canvas).astype(np.float32))[None, None]
        values = torch.from_numpy(np.nan_to_num(canvas))[None, None]
        values = F.interpolate(values, size=original, mode="bilinear", align_corners=False)[0, 0]
        seen = F.interpolate(seen, size=original, mode="bilinear", align_corners=False)[0, 0]
        return np.where(seen.numpy() > 0.5, values.numpy() / np.maximum(seen.numpy(), 1e-6), np.nan).astype(np.float32)


def shorter_side_size(original: tuple[int, int], side: int) -> tuple[int, int]:
    """torchvision's ``Resize(int)``: the shorter side becomes ``side``, the longer ``int(side * long / short)``."""
    height, width = original
    if height <= width:
        return side, int(side * width / height)
    return int(side * height / width), side


class Geometry(torch.nn.Module):
    """Resize a (C, H, W) tensor as ``preprocessing`` says (then ``Letterbox`` pads, or the centre is cropped)."""

    def __init__(self, preprocessing: Preprocessing, interpolation: InterpolationMode, antialias: bool) -> None:
        super().__init__()
        self.preprocessing, self.interpolation, self.antialias = preprocessing, interpolation, antialias

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        p = self.preprocessing
        if p.crop == "center":
            resized = T.functional.resize(image, p.resize, self.interpolation, antialias=self.antialias)
            return T.functional.center_crop(resized, list(p.size))
        scaled = p.placement(tuple(image.shape[-2:])).scaled
        return T.functional.resize(image, list(scaled), self.interpolation, antialias=self.antialias)


class Letterbox(torch.nn.Module):
    """Pad a resized image to the input size (``crop='pad'``); the other geometries are already there."""

    def __init__(self, preprocessing: Preprocessing, value: float = 0.0) -> None:
        super().__init__()
        self.preprocessing, self.value = preprocessing, value

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = self.preprocessing.size
        if self.preprocessing.crop != "pad" or tuple(image.shape[-2:]) == (height, width):
            return image
        top, left = (height - image.shape[-2]) // 2, (width - image.shape[-1]) // 2
        padding = (left, width - image.shape[-1] - left, top, height - image.shape[-2] - top)
        return F.pad(image, padding, value=self.value)


class Binarize(torch.nn.Module):
    """Mask values -> 0/1 floats: above ``threshold`` after scaling to [0, 1] (0: any non-zero value)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return (mask > 0).float() if self.threshold == 0 else (mask >= self.threshold).float()


def image_transform(resize: int, imagesize: int, crop: str = "center") -> T.Compose:
    """``Preprocessing(resize, imagesize, crop).image_transform()``."""
    return Preprocessing(resize, imagesize, crop).image_transform()


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Normalised (3, H, W) tensor -> displayable (H, W, 3) tensor in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0)


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale (L, I;16), palette and RGBA images -> RGB, so every category gives 3 channels."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I"):
        image = image.point(lambda value: value / 256).convert("L")
    return image.convert("RGB")
