"""A small synthetic dataset in the MVTec AD layout: textures and objects with drawn defects and exact masks.

It is the embedded default dataset of the notebooks when no real data is in ``work/`` and the fixture of the
tests. Every image is a deterministic function of (seed, category, split, index). Defects are deliberately
subtle (low-contrast stains, thin scratches, small holes, missing object parts) so that pretrained features
visibly beat random ones, as on MVTec AD.
"""

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ..io import atomic_dir

TEXTURES = ("weave", "wood", "tile")
OBJECTS = ("washer", "capsule")
CATEGORIES = TEXTURES + OBJECTS
DEFECTS = {
    "weave": ("scratch", "hole", "stain"),
    "wood": ("scratch", "hole", "stain"),
    "tile": ("crack", "hole", "stain"),
    "washer": ("scratch", "stain", "missing"),
    "capsule": ("scratch", "stain", "missing"),
}
MANIFEST = "synthetic_manifest.json"


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered noise: the natural variation of a surface."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return noise / (noise.std() + 1e-8)


def shade(gray: np.ndarray, color: Sequence[float]) -> np.ndarray:
    """Colour a [0, 1] intensity field: (H, W) -> (H, W, 3)."""
    return gray[..., None] * np.asarray(color, dtype=np.float64)[None, None, :]


def draw_weave(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    period = size / rng.uniform(14, 16)
    phase = rng.uniform(0, 2 * np.pi, 2)
    warp = 1.5 * smooth_noise(rng, size, 6)
    threads = np.sin(2 * np.pi * (xx + warp) / period + phase[0]) * np.sin(2 * np.pi * yy / period + phase[1])
    gray = 0.6 + 0.18 * threads + 0.05 * smooth_noise(rng, size, 1) + 0.04 * smooth_noise(rng, size, 12)
    return shade(gray, (0.75, 0.55, 0.45)), np.ones((size, size), bool)


def draw_wood(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    warp = 6 * smooth_noise(rng, size, 10)
    grain = np.sin(2 * np.pi * (yy + warp + 0.15 * xx) / rng.uniform(10, 13) + rng.uniform(0, 6.3))
    gray = 0.62 + 0.12 * grain + 0.04 * smooth_noise(rng, size, 1.5) + 0.05 * smooth_noise(rng, size, 20)
    return shade(gray, (0.85, 0.62, 0.38)), np.ones((size, size), bool)


def draw_tile(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    cells = 4
    step = size / cells
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    offset = rng.uniform(0, step, 2)
    cell_y, cell_x = ((yy + offset[0]) // step).astype(int), ((xx + offset[1]) // step).astype(int)
    tone = rng.uniform(0.62, 0.7, (cells + 2, cells + 2))[cell_y, cell_x]
    grout = (((yy + offset[0]) % step) < 3) | (((xx + offset[1]) % step) < 3)
    speckle = 0.05 * smooth_noise(rng, size, 0.8)
    gray = np.where(grout, 0.35, tone + speckle)
    return shade(gray, (0.8, 0.8, 0.76)), np.ones((size, size), bool)


def draw_washer(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.uniform(-0.03, 0.03, 2) * size
    radius = np.hypot(yy - cy, xx - cx)
    outer, inner = size * rng.uniform(0.36, 0.38), size * rng.uniform(0.16, 0.17)
    body = (radius < outer) & (radius > inner)
    angle = np.arctan2(yy - cy, xx - cx)
    metal = 0.62 + 0.1 * np.cos(angle - rng.uniform(0, 6.3)) + 0.03 * smooth_noise(rng, size, 1)
    background = 0.2 + 0.02 * smooth_noise(rng, size, 8)
    gray = np.where(body, metal, background)
    return shade(gray, (0.9, 0.9, 0.95)), body


def draw_capsule(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.uniform(-0.03, 0.03, 2) * size
    half_length, radius = size * 0.28, size * rng.uniform(0.13, 0.14)
    along = np.clip(xx - cx, -half_length, half_length)
    body = np.hypot(xx - cx - along, yy - cy) < radius
    highlight = 0.08 * np.exp(-(((yy - cy + radius * 0.4) / (radius * 0.3)) ** 2))
    left = xx < cx
    colour = np.where(left[..., None], [0.85, 0.3, 0.25], [0.95, 0.92, 0.85])
    gray = 0.85 + highlight + 0.02 * smooth_noise(rng, size, 1)
    background = np.full((size, size, 3), 0.3) + 0.02 * smooth_noise(rng, size, 8)[..., None]
    image = np.where(body[..., None], colour * gray[..., None], background)
    return image, body


PAINTERS: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]] = {
    "weave": draw_weave,
    "wood": draw_wood,
    "tile": draw_tile,
    "washer": draw_washer,
    "capsule": draw_capsule,
}


def random_point(rng: np.random.Generator, support: np.ndarray, margin: int) -> tuple[int, int]:
    """A point of ``support`` (object pixels) away from the border, where a defect will be drawn."""
    inner = ndimage.binary_erosion(support, iterations=margin)
    candidates = np.argwhere(inner if inner.any() else support)
    y, x = candidates[rng.integers(len(candidates))]
    return int(y), int(x)


def defect_mask(rng: np.random.Generator, kind: str, size: int, support: np.ndarray) -> np.ndarray:
    """A boolean mask of one defect, drawn inside the object."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    y, x = random_point(rng, support, margin=max(2, size // 20))
    if kind in ("scratch", "crack"):
        length = size * rng.uniform(0.15, 0.3)
        angle = rng.uniform(0, np.pi)
        points = [(x + t * length * np.cos(angle) + rng.normal(0, size * 0.01),
                   y + t * length * np.sin(angle) + rng.normal(0, size * 0.01)) for t in np.linspace(-0.5, 0.5, 6)]
        draw.line(points, fill=255, width=max(1, size // 96 + (kind == "crack")))
    elif kind == "hole":
        r = size * rng.uniform(0.03, 0.05)
        draw.ellipse((x - r, y - r * rng.uniform(0.7, 1.0), x + r, y + r), fill=255)
    elif kind == "stain":
        r = size * rng.uniform(0.05, 0.09)
        angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        radii = r * rng.uniform(0.6, 1.2, 12)
        draw.polygon([(x + a * np.cos(t), y + a * np.sin(t)) for a, t in zip(radii, angles, strict=True)], fill=255)
    elif kind == "missing":
        r = size * rng.uniform(0.08, 0.12)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    else:
        raise ValueError(f"Unknown defect kind {kind!r}")
    return (np.asarray(canvas) > 127) & support


def apply_defect(
    rng: np.random.Generator, kind: str, image: np.ndarray, mask: np.ndarray, background: float
) -> np.ndarray:
    """Paint a defect into the image where ``mask`` is set."""
    out = image.copy()
    if kind in ("scratch", "crack"):
        out[mask] = out[mask] * rng.uniform(0.5, 0.65) if kind == "crack" else np.minimum(out[mask] + 0.22, 1)
    elif kind == "hole":
        out[mask] = 0.08
    elif kind == "stain":
        tint = np.asarray([rng.uniform(0.75, 0.85), rng.uniform(0.8, 0.9), rng.uniform(0.9, 1.0)])
        out[mask] = out[mask] * tint
    elif kind == "missing":
        out[mask] = background
    return out


def render_parts(seed: int, category: str, split_code: int, index: int, size: int,
                 defect: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image (uint8 RGB), its mask (uint8, 255 = defect) and its object support (bool; all True for
    textures) as a pure function of its arguments."""
    rng = np.random.default_rng([seed, CATEGORIES.index(category), split_code, index])
    image, support = PAINTERS[category](rng, size)
    mask = np.zeros((size, size), bool)
    if defect is not None:
        mask = defect_mask(rng, defect, size, support)
        background = float(np.median(image[~support])) if (~support).any() else 0.2
        image = apply_defect(rng, defect, image, mask, background)
    image = image + rng.normal(0, 0.01, image.shape)
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return pixels, (mask * 255).astype(np.uint8), support


def render(seed: int, category: str, split_code: int, index: int, size: int, defect: str | None):
    """One image (uint8 RGB) and its mask (uint8, 255 = defect) as a pure function of its arguments."""
    pixels, mask, _ = render_parts(seed, category, split_code, index, size, defect)
    return pixels, mask


def make_synthetic_dataset(
    root: str | Path,
    categories: Sequence[str] = CATEGORIES,
    n_train: int = 30,
    n_test_good: int = 10,
    n_test_defect: int = 5,
    image_size: int = 128,
    seed: int = 0,
    width_factor: int = 1,
) -> Path:
    """Write the dataset under ``root`` (MVTec layout) and return ``root``.

    ``n_test_defect`` images are made per defect type. ``width_factor`` > 1 makes wide frames,
    ``image_size`` high and ``width_factor`` times as wide, as a line camera scans a long part: squares side by
    side, the defect in one of them (often not the middle one, so a centre crop loses it).
    If ``root`` already holds a dataset made with the same arguments it is left as it is; a different one is
    never overwritten (choose another folder).
    Writing goes to a temporary folder that is renamed at the end, so an interrupted run leaves nothing half-made.
    """
    params = {"categories": list(categories), "n_train": n_train, "n_test_good": n_test_good,
              "n_test_defect": n_test_defect, "image_size": image_size, "seed": seed}
    if width_factor != 1:  # only then: datasets made before the option keep their manifest
        params["width_factor"] = width_factor
    return write_once(root, params, write_category)


def write_once(root: str | Path, params: dict, write: Callable[[Path, str, dict], None]) -> Path:
    """Write each category with ``write(folder, category, params)`` into ``root`` unless ``root`` already holds
    a dataset made with the same ``params``; refuse a non-empty folder with other contents."""
    unknown = sorted(set(params["categories"]) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"Unknown synthetic categories {unknown}; choose from {list(CATEGORIES)}")
    root = Path(root)
    manifest = root / MANIFEST
    if manifest.is_file():
        if json.loads(manifest.read_text()) == params:
            return root
        raise FileExistsError(
            f"{root} holds a synthetic dataset made with other settings ({manifest}). "
            "Pick another folder or delete this one."
        )
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty; refusing to write a synthetic dataset into it.")
    with atomic_dir(root, overwrite=True) as staging:  # only an empty folder can be here
        for category in params["categories"]:
            write(staging / category, category, params)
        (staging / MANIFEST).write_text(json.dumps(params, indent=2))
    return root


def write_category(folder: Path, category: str, params: dict) -> None:
    size, seed = params["image_size"], params["seed"]
    jobs = [("train", "good", 0, i, None) for i in range(params["n_train"])]
    jobs += [("test", "good", 1, i, None) for i in range(params["n_test_good"])]
    for d, defect in enumerate(DEFECTS[category]):
        jobs += [("test", defect, 2 + d, i, defect) for i in range(params["n_test_defect"])]
    width_factor = params.get("width_factor", 1)
    for split, folder_name, split_code, index, defect in jobs:
        pixels, mask = render(seed, category, split_code, index, size, defect)
        if width_factor > 1:
            pixels, mask = widen(pixels, mask, seed, category, split_code, index, width_factor)
        out_dir = folder / split / folder_name
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(out_dir / f"{index:03d}.png")
        if defect is not None:
            mask_dir = folder / "ground_truth" / folder_name
            mask_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mask_dir / f"{index:03d}_mask.png")


def widen(pixels: np.ndarray, mask: np.ndarray, seed: int, category: str, split_code: int, index: int,
          width_factor: int) -> tuple[np.ndarray, np.ndarray]:
    """``width_factor`` squares side by side: the rendered one (with its defect, if any) at a seeded position, good
    squares of the same category elsewhere."""
    size = pixels.shape[0]
    rng = np.random.default_rng([seed, split_code, index, width_factor])
    position = int(rng.integers(width_factor))
    tiles = [render(seed, category, 100 + split_code, index * width_factor + k, size, None)[0]
             for k in range(width_factor - 1)]
    tiles.insert(position, pixels)
    masks = [np.zeros_like(mask) for _ in range(width_factor - 1)]
    masks.insert(position, mask)
    return np.concatenate(tiles, axis=1), np.concatenate(masks, axis=1)


# -- AeBAD-style domain shifts --------------------------------------------------------------------------------
DOMAIN_SHIFTS = ("same", "background", "illumination", "view")
TRAIN_DOMAINS = ("background", "illumination", "view")  # AeBAD-S's train sub-folders (zhangzilongc/MMR)


def new_surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """A striped, coloured surface unlike any category's own background: the 'background' domain."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    stripes = np.sin(2 * np.pi * (xx + yy) * rng.uniform(4, 8))
    gray = rng.uniform(0.3, 0.55) + 0.08 * stripes + 0.03 * smooth_noise(rng, size, 4)
    return shade(gray, rng.uniform(0.5, 1.0, 3))


def warp(image: np.ndarray, mask: np.ndarray, support: np.ndarray, angle: float, scale: float,
         shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate (degrees), scale and shift about the centre. Image and mask use the same sampling (bilinear, the
    mask re-binarised at 0.5) so the mask stays on the defect. Beyond the frame a texture continues mirrored and
    an object's background is extended; the support is zero there."""
    mode = "reflect" if support.all() else "nearest"
    theta = np.deg2rad(angle)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    matrix = rotation.T / scale  # output (y, x) -> input (y, x)
    centre = (np.asarray(mask.shape, np.float64) - 1) / 2
    offset = centre - matrix @ (centre + shift)
    channels = [ndimage.affine_transform(image[..., c], matrix, offset, order=1, mode=mode) for c in range(3)]
    moved_mask = ndimage.affine_transform(mask.astype(np.float64), matrix, offset, order=1, mode=mode) >= 0.5
    moved_support = ndimage.affine_transform(support.astype(np.float64), matrix, offset, order=0, cval=0) > 0.5
    return np.stack(channels, axis=-1), moved_mask, moved_support


def shift_domain(pixels: np.ndarray, mask: np.ndarray, support: np.ndarray, domain: str,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One AeBAD-style domain shift of a rendered image (uint8 RGB) and its mask (uint8, 255 = defect).

    - illumination: brightness, contrast, colour cast and a light gradient; the mask is unchanged;
    - background: the object on a new surface (a texture is shrunk to 75 % and laid on it);
    - view: rotated by up to 12 degrees, scaled to 72-80 % and shifted, never leaving the frame, so no defect
      is cropped away and every mask stays non-empty.
    """
    if domain not in DOMAIN_SHIFTS:
        raise ValueError(f"Unknown domain {domain!r}; choose from {list(DOMAIN_SHIFTS)}")
    image, defect, size = pixels / 255.0, mask > 127, mask.shape[0]
    if domain == "illumination":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size - 0.5
        direction = rng.uniform(0, 2 * np.pi)
        gradient = 1 + rng.uniform(0.3, 0.6) * (np.cos(direction) * xx + np.sin(direction) * yy)
        brightness = rng.uniform(0.6, 0.75) if rng.random() < 0.5 else rng.uniform(1.2, 1.35)
        mean = image.mean()
        image = ((image - mean) * rng.uniform(0.7, 0.85) + mean) * brightness
        image = image * gradient[..., None] * rng.uniform(0.85, 1.15, 3)
    elif domain == "background":
        if support.all():
            image, defect, support = warp(image, defect, support, 0.0, 0.75, np.zeros(2))
        image = np.where(support[..., None], image, new_surface(rng, size))
        defect &= support
    elif domain == "view":
        angle, scale = rng.uniform(-12, 12), rng.uniform(0.72, 0.8)
        half_extent = 0.5 * size * scale * (abs(np.cos(np.deg2rad(angle))) + abs(np.sin(np.deg2rad(angle))))
        shift = rng.uniform(-1, 1, 2) * max(0.0, 0.5 * size - half_extent - 1)
        image, defect, _ = warp(image, defect, support, angle, scale, shift)
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return pixels, (defect * 255).astype(np.uint8)


def make_synthetic_aebad(
    root: str | Path,
    categories: Sequence[str] = ("washer",),
    n_train: int = 30,
    n_test_good: int = 3,
    n_test_defect: int = 2,
    image_size: int = 96,
    seed: int = 0,
) -> Path:
    """A domain-shift dataset in the AeBAD-S layout (``<root>/<category>/train/good/<domain>``,
    ``test/<defect>/<domain>``, ``ground_truth/<defect>/<domain>/<image name>``) and return ``root``.

    The same renderer as ``make_synthetic_dataset``, then one shift per domain (``shift_domain``). The ``n_train``
    train images go round-robin to background, illumination and view, as AeBAD-S's train set; ``n_test_good``
    good and ``n_test_defect`` images per defect type are made for each of same, background, illumination, view.
    Deterministic by ``seed``; an existing identical dataset is kept, a different one refused.
    """
    params = {"layout": "aebad_s", "categories": list(categories), "n_train": n_train, "n_test_good": n_test_good,
              "n_test_defect": n_test_defect, "image_size": image_size, "seed": seed}
    return write_once(root, params, write_aebad_category)


def write_aebad_category(folder: Path, category: str, params: dict) -> None:
    size, seed = params["image_size"], params["seed"]
    n_good, n_defect = params["n_test_good"], params["n_test_defect"]
    jobs = [("train", "good", TRAIN_DOMAINS[i % len(TRAIN_DOMAINS)], 0, i, None) for i in range(params["n_train"])]
    for d, domain in enumerate(DOMAIN_SHIFTS):
        jobs += [("test", "good", domain, 1, d * n_good + i, None) for i in range(n_good)]
        for k, defect in enumerate(DEFECTS[category]):
            jobs += [("test", defect, domain, 2 + k, d * n_defect + i, defect) for i in range(n_defect)]
    for split, folder_name, domain, split_code, index, defect in jobs:
        pixels, mask, support = render_parts(seed, category, split_code, index, size, defect)
        rng = np.random.default_rng([seed, CATEGORIES.index(category), split_code, index,
                                     100 + DOMAIN_SHIFTS.index(domain)])
        pixels, mask = shift_domain(pixels, mask, support, domain, rng)
        out_dir = folder / split / folder_name / domain
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(out_dir / f"{index:03d}.png")
        if defect is not None:
            mask_dir = folder / "ground_truth" / folder_name / domain
            mask_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mask_dir / f"{index:03d}.png")
