"""Image and mask preprocessing as in patchcore-inspection: resize the shorter side, centre-crop, normalise."""

import torch
from PIL import Image
from torchvision.transforms import v2 as T
from torchvision.transforms.functional import InterpolationMode

# torchvision's ImageNet statistics, used by every pretrained backbone of the library.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_transform(resize: int, imagesize: int) -> T.Compose:
    """PIL image -> normalised float tensor (3, imagesize, imagesize)."""
    return T.Compose(
        [
            T.PILToTensor(),
            T.Resize(resize, interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(imagesize),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def mask_transform(resize: int, imagesize: int) -> T.Compose:
    """PIL mask -> binary float tensor (1, imagesize, imagesize).

    Upstream resizes bilinearly and later casts with ``astype(int)``, which silently drops every border
    pixel below 1.0; here the resized mask is binarised at 0.5 so masks stay exact 0/1.
    """
    return T.Compose(
        [
            T.PILToTensor(),
            T.ToDtype(torch.float32, scale=True),
            T.Resize(resize, interpolation=InterpolationMode.BILINEAR, antialias=False),
            T.CenterCrop(imagesize),
            Binarize(),
        ]
    )


class Binarize(torch.nn.Module):
    """Threshold a resized mask at 0.5 (a class, not a lambda, so DataLoader workers can pickle it)."""

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return (mask >= 0.5).float()


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
