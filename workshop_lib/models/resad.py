"""ResAD: class-generalizable anomaly detection with residual features (Yao et al., NeurIPS 2024,
arXiv 2410.20047; official code xcyao00/ResAD @ 0afc30e, method code from 08c9b74).

Train once on some classes ("seen"); detect anomalies in classes never seen in training ("unseen"), given only a
few normal reference images of each. Features of a new class are far from anything seen in training, but its
*residuals* (a feature minus the nearest normal feature of the same class) look alike across classes: small for
normal patches, large for defects. So the model learns the distribution of residuals, not of features.

Pipeline (the paper's three parts), with the official code's choices unless noted:

- frozen encoder: a backbone's layers 1-3 (``backbone_spec(name).distillation_layers``); upstream uses timm
  ``wide_resnet50_2`` with ``out_indices=(1, 2, 3)`` (256/512/1024 channels at strides 4/8/16), 224 px.
- feature converter: for each patch feature, its **cosine nearest** reference feature of the same level among the
  class's reference patches (``utils.py::get_matched_ref_features``: argmax of L2-normalised dot products), then
  the residual. The paper writes ``r = f - p``; the official code calls ``get_residual_features(..., pos_flag=True)``
  for CNN encoders in ``main.py``/``validate.py``, i.e. ``F.mse_loss(f, p, reduction='none')`` = **(f - p)^2**
  element-wise (the plain difference is only used on its ImageBind path). ``residual="squared"`` (default)
  follows the code; ``residual="difference"`` is the paper's formula.
- references in training: for every batch and every class in it, ``train_shots`` (upstream ``train_ref_shot=4``)
  random normal training images of that class, re-encoded (``utils.py::get_mc_reference_features``). Here they
  are drawn without replacement and never from the images of the batch itself (upstream draws with replacement
  from all, so a query can be its own reference and get a zero residual).
- references at test time: ``shots`` normal images per class (upstream 2/4/8-shot folders of the Hugging Face
  dataset ``xcyao00/resad-data``), encoded once and kept per class and level (``add_references``;
  ``save_references``/``load_references`` keep them on disk, one file per class). Chosen deterministically by
  seed from the class's ``train/good`` (``reference_indices``: the first k of one seeded permutation, so the
  2-shot images are among the 4-shot ones, as upstream keeps the first ``num_shot`` of its saved features), or
  given as a folder.
- feature constraintor (``models/modules.py::MultiScaleConv``): per level Conv3x3(C -> C, bias) + BN + ReLU,
  trained with the hypersphere ("one-class") loss of ``losses/loss.py::calculate_log_barrier_bi_occ_loss`` on
  normal positions: radius ``A = sqrt(||e||_2 + 1) - 1``; positions outside the shell [0.99 r, r]
  (r = ``occ_radius`` = 0.4) get ``-logsigmoid(-(A - r)) * exp(A - r)`` (weight detached), positions inside
  ``-logsigmoid(-(0.99 r - A)) * exp(0.99 r - A)``.
- feature distribution estimator (``models/fc_flow.py``): per level a FrEIA ``SequenceINN`` of ``coupling_layers``
  (10) ``AllInOneBlock`` s, ``affine_clamping=1.9``, ``global_affine_type='SOFTPLUS'``, ``permute_soft=True``,
  subnet Linear(d, 2d) -> ReLU -> Linear(2d, d_out), conditioned on a 2-D sin-cos position encoding of
  ``pos_embed_dim`` (256) channels (``models/modules.py::get_position_encoding``). It sees the constraintor's
  output detached (upstream trains the two with separate optimisers and detaches in between).
- flow loss (``train.py::train``, first stage): per position ``logp = -d/2 log(2 pi) - ||z||^2 / 2 + log|det J|``,
  divided by d; loss = ``-logsigmoid(logp / d)`` averaged (BGAD's ``log_theta``).
- optimisation (``main.py``): Adam, lr 1e-5, weight decay 5e-4, MultiStepLR at epochs 70 and 90 (x0.1),
  100 epochs (README: "about 60 epochs" suffice), batch 32, seed 42. Upstream has three Adam optimisers with the
  same settings (VQ, constraintor, flows); the flows see detached inputs, so one Adam over both sets of parameters
  is the same update. The shared ``training.train_epochs`` loop adds the progress bar, checkpoints and resume.
- score (``validate.py``, ``scores1``): per level the negative log-likelihood per dimension of every patch,
  bilinearly upsampled (align_corners=True) to the image size, summed over levels, Gaussian sigma 4; image score
  = max of the map.

Not taken from the official code, on purpose:

- the improved code's extras (ResAD++, arXiv 2509.23741): the VQ codebook with exact feature-distribution
  matching at test time, the second training stage (from epoch 10) on the seen classes' *test* anomalies with
  masks (abnormal-invariance loss, focal loss, boundary-guided semi-push-pull) and the merged second score
  (``scores2``). This is the paper's method with the code's residual and constraintor loss: normal images only.
- upstream's flows take ``bs*h*w // 8192`` optimiser steps per level and batch, so a level with fewer than 8192
  positions in a batch (layer 3 at batch 32: 6272) **never trains**. Here every level trains at every step on
  ``min(flow_chunk, positions)`` randomly chosen positions (one joint step per batch).
- upstream saves a checkpoint only when AUPRO improves, and AUPRO is switched off (``pro=False`` gives -1), so
  ``main.py`` never saves one. Here ``checkpoint_dir`` gets one every ``checkpoint_every`` epochs and at the end.
- upstream turns log-likelihoods into scores with the **test set's** maximum (``convert_to_anomaly_scores``:
  ``logps -= max(logps over the whole test set)``), so one image's score depends on the other test images. Here
  each level's NLL is standardised with the mean and standard deviation of that level's NLL over the *training*
  images (``nll_statistics_``, computed once after training), so the levels are summed on one scale and a score
  depends on the image and its class's references only.
"""

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..backbones import FeatureExtractor, Weights
from ..data.references import IndexedDataset, category_indices
from ..device import resolve_device
from ..io import atomic_file
from ..maps import gaussian_blur, upsample_sum
from ..seeding import seeded
from ..training import train_epochs
from .base import AnomalyModel, ModelOutput
from .components.teacher import frozen_teacher

LOG_2PI_HALF = 0.5 * math.log(2 * math.pi)  # upstream's _GCONST_ = -0.9189385332046727 is its negative
RESIDUALS = ("squared", "difference")


# -- residual features -----------------------------------------------------------------------------
def match_references(features: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """For each position of ``features`` (B, C, h, w), the cosine-nearest row of ``references`` (M, C), as
    (B, C, h, w). One image at a time keeps the (h*w, M) similarity matrix small."""
    bank = F.normalize(references, dim=1)
    matched = []
    for feature in features:
        queries = feature.flatten(1).T  # (h*w, C)
        nearest = (F.normalize(queries, dim=1) @ bank.T).argmax(dim=1)
        matched.append(references[nearest].T.reshape(feature.shape))
    return torch.stack(matched)


def residual_features(features: torch.Tensor, matched: torch.Tensor, kind: str = "squared") -> torch.Tensor:
    """``(f - p)^2`` element-wise (the official code) or ``f - p`` (the paper)."""
    if kind == "squared":
        return (features - matched) ** 2
    if kind == "difference":
        return features - matched
    raise ValueError(f"residual must be one of {RESIDUALS}, got {kind!r}")


def hypersphere_loss(features: torch.Tensor, radius: float = 0.4, inner_ratio: float = 0.99) -> torch.Tensor:
    """Pull normal features (N, C) into the shell ``[inner_ratio * radius, radius]`` of the pseudo-radius
    ``sqrt(||e|| + 1) - 1`` with exponentially weighted log-barrier terms (module docstring)."""
    radii = torch.sqrt(features.norm(dim=1) + 1) - 1
    inner = inner_ratio * radius
    outside, inside = radii[radii > radius] - radius, inner - radii[radii < inner]
    loss = features.new_zeros(())
    for excess in (outside, inside):
        if len(excess):
            loss = loss + torch.mean(-F.logsigmoid(-excess) * torch.exp(excess).detach())
    return loss


# -- flows ------------------------------------------------------------------------------------------
def position_encoding(dim: int, height: int, width: int) -> torch.Tensor:
    """2-D sin-cos position encoding, (height * width, dim): the first half encodes x, the second y, each as
    interleaved sin/cos at frequencies 1e4^(-2i / (dim/2)) (upstream ``get_position_encoding``)."""
    if dim % 4:
        raise ValueError(f"pos_embed_dim must be a multiple of 4 (sin and cos of x and y), got {dim}")
    half = dim // 2
    frequencies = torch.exp(torch.arange(0, half, 2, dtype=torch.float32) * -(math.log(1e4) / half))

    def encode(length: int) -> torch.Tensor:
        angles = torch.arange(length, dtype=torch.float32)[:, None] * frequencies
        return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, half)

    x, y = encode(width), encode(height)
    grid = torch.cat([x[None].expand(height, width, half), y[:, None].expand(height, width, half)], dim=-1)
    return grid.reshape(height * width, dim)


def subnet(dims_in: int, dims_out: int) -> nn.Module:
    """The coupling blocks' subnet (upstream ``subnet_fc``)."""
    return nn.Sequential(nn.Linear(dims_in, 2 * dims_in), nn.ReLU(), nn.Linear(2 * dims_in, dims_out))


def build_flow(channels: int, cond_dim: int, coupling_layers: int, clamp_alpha: float) -> Ff.SequenceINN:
    """A conditional normalising flow on ``channels``-dim vectors (upstream ``conditional_flow_model``)."""
    flow = Ff.SequenceINN(channels)
    with warnings.catch_warnings():  # FrEIA warns that soft permutations of > 512 channels start slowly (~1 s)
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(coupling_layers):
            flow.append(Fm.AllInOneBlock, cond=0, cond_shape=(cond_dim,), subnet_constructor=subnet,
                        affine_clamping=clamp_alpha, global_affine_type="SOFTPLUS", permute_soft=True)
    return flow


def flow_log_likelihood(flow: Ff.SequenceINN, vectors: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Log-likelihood per dimension of each row of ``vectors`` (N, d) under the flow, (N,)."""
    z, log_det = flow(vectors, c=[condition])
    dim = vectors.shape[1]
    return (-dim * LOG_2PI_HALF - 0.5 * (z**2).sum(dim=1) + log_det) / dim


def flow_loss(log_likelihood: torch.Tensor) -> torch.Tensor:
    """Upstream's first-stage flow loss: ``-logsigmoid(logp / d)``, averaged."""
    return -F.logsigmoid(log_likelihood).mean()


class ConvBnAct(nn.Sequential):
    """The constraintor of one level: Conv3x3 (with bias) + BN + ReLU, channels unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True))


class ResADHead(nn.Module):
    """What ResAD trains: a constraintor and a conditional flow per level."""

    def __init__(self, channels: Sequence[int], coupling_layers: int, clamp_alpha: float, pos_embed_dim: int,
                 seed: int = 0) -> None:
        super().__init__()
        position_encoding(pos_embed_dim, 1, 1)  # fail early on a bad dimension
        self.pos_embed_dim = pos_embed_dim
        with seeded(seed, numpy=True):  # FrEIA draws its permutations from numpy's global generator
            self.constraintor = nn.ModuleList(ConvBnAct(c) for c in channels)
            self.flows = nn.ModuleList(build_flow(c, pos_embed_dim, coupling_layers, clamp_alpha) for c in channels)

    def constrain(self, residuals: list[torch.Tensor]) -> list[torch.Tensor]:
        return [layer(r) for layer, r in zip(self.constraintor, residuals, strict=True)]

    def condition(self, height: int, width: int, batch: int, device: torch.device) -> torch.Tensor:
        """Position encodings of every position of ``batch`` maps, in the order of ``flatten_positions``."""
        return position_encoding(self.pos_embed_dim, height, width).to(device).repeat(batch, 1)

    def log_likelihood_maps(self, constrained: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level, the flow's log-likelihood per dimension at every position, (B, h, w)."""
        maps = []
        for flow, e in zip(self.flows, constrained, strict=True):
            batch, _, height, width = e.shape
            logp = flow_log_likelihood(flow, flatten_positions(e), self.condition(height, width, batch, e.device))
            maps.append(logp.reshape(batch, height, width))
        return maps


def flatten_positions(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B * h * w, C), image by image, row by row."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


# -- the model --------------------------------------------------------------------------------------------
class ResAD(AnomalyModel):
    """Residual features + constraintor + per-level flows; scores new classes from a few normal references."""

    method = "resad"
    default_sizes = (224, 224)  # upstream: Resize(224, shorter side) -> CenterCrop(224)

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str] | None = None,
        weights: Weights = "imagenet",
        residual: str = "squared",
        shots: int = 4,
        train_shots: int = 4,
        coupling_layers: int = 10,
        clamp_alpha: float = 1.9,
        pos_embed_dim: int = 256,
        flow_chunk: int = 8192,
        occ_radius: float = 0.4,
        epochs: int = 100,
        batch_size: int = 32,
        lr: float = 1e-5,
        weight_decay: float = 5e-4,
        lr_milestones: Sequence[int] = (70, 90),
        checkpoint_dir: str | None = None,
        checkpoint_every: int = 5,
        resume: bool = False,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.residual = residual
        self.shots = shots
        self.train_shots = train_shots
        self.coupling_layers = coupling_layers
        self.clamp_alpha = clamp_alpha
        self.pos_embed_dim = pos_embed_dim
        self.flow_chunk = flow_chunk
        self.occ_radius = occ_radius
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_milestones = lr_milestones
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.device = device
        self.seed = seed
        self._extractor: FeatureExtractor | None = None
        self._head: ResADHead | None = None
        self._selected: tuple[str, int] | None = None

    # -- modules -----------------------------------------------------------------------------------
    @property
    def extractor(self) -> FeatureExtractor:
        """The frozen encoder, built on first use on the resolved device."""
        if self._extractor is None:
            extractor = frozen_teacher(self.backbone, self.layers, self.weights, self.seed)
            self._extractor = extractor.to(resolve_device(self.device))
        return self._extractor

    @property
    def head(self) -> ResADHead:
        """Constraintor + flows, built on first use (same seed, same initial weights)."""
        if self._head is None:
            if self.residual not in RESIDUALS:
                raise ValueError(f"residual must be one of {RESIDUALS}, got {self.residual!r}")
            head = ResADHead(self.extractor.channels, self.coupling_layers, self.clamp_alpha, self.pos_embed_dim,
                             self.seed)
            self._head = head.to(self.torch_device).eval()
        return self._head

    @property
    def torch_device(self) -> torch.device:
        return next(self.extractor.parameters()).device

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.extractor(images.to(self.torch_device))

    def residuals(self, features: list[torch.Tensor], references: list[torch.Tensor]) -> list[torch.Tensor]:
        """Residuals of (B, C, h, w) features against one class's reference features (M_l, C) per level."""
        return [residual_features(f, match_references(f, r), self.residual)
                for f, r in zip(features, references, strict=True)]

    # -- fit ---------------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, progress: bool = True) -> "ResAD":
        """Train constraintor and flows on the normal images of the seen classes (items carry ``category``)."""
        image_size = self.start_fit(dataset)
        groups = category_indices(dataset)
        small = {c: len(i) for c, i in groups.items() if len(i) < 2}
        if small:
            raise ValueError(f"Classes with fewer than 2 training images: {small}. Each class needs one image to "
                             "learn from and at least one other as its reference.")
        if self.flow_chunk < 1 or self.train_shots < 1:
            raise ValueError(f"flow_chunk ({self.flow_chunk}) and train_shots ({self.train_shots}) must be >= 1")
        self._head = None
        head, device = self.head, self.torch_device
        indexed = IndexedDataset(dataset)
        shuffling = torch.Generator().manual_seed(self.seed)
        loader = DataLoader(indexed, batch_size=self.batch_size, shuffle=True, generator=shuffling)
        sampler = torch.Generator().manual_seed(self.seed + 1)  # references and flow positions
        trainable = [p for p in head.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(  # upstream steps per epoch; train_epochs per batch
            optimizer, [m * len(loader) for m in self.lr_milestones], gamma=0.1)

        def loss_of_batch(batch: dict) -> torch.Tensor:
            residuals = self.training_residuals(dataset, groups, batch, sampler)
            constrained = head.constrain(residuals)
            loss = sum(hypersphere_loss(flatten_positions(e), self.occ_radius) for e in constrained)
            for flow, e in zip(head.flows, constrained, strict=True):
                batch_size, _, height, width = e.shape
                vectors = flatten_positions(e.detach())
                condition = head.condition(height, width, batch_size, device)
                chosen = torch.randperm(len(vectors), generator=sampler)[: self.flow_chunk].to(device)
                loss = loss + flow_loss(flow_log_likelihood(flow, vectors[chosen], condition[chosen]))
            return loss

        self.losses_ = train_epochs(head, optimizer, lambda: loader, loss_of_batch, self.epochs, scheduler,
                                    checkpoint_dir=self.checkpoint_dir,  # one model for all classes
                                    checkpoint_every=self.checkpoint_every, resume=self.resume, progress=progress,
                                    description=self.progress_label(dataset),
                                    settings=self.training_settings(), generators=[shuffling, sampler])
        self.seen_classes_ = sorted(groups)
        self.image_size_ = image_size
        self.nll_statistics_ = self.training_statistics(dataset, groups, progress)
        self.references_: dict[str, list[torch.Tensor]] = {}
        self.reference_paths_: dict[str, list[str]] = {}
        self._selected = None
        return self

    def training_residuals(self, dataset: Dataset, groups: dict[str, list[int]], batch: dict,
                           generator: torch.Generator) -> list[torch.Tensor]:
        """Residuals of a training batch: each image against ``train_shots`` other images of its class."""
        features = self.encode(batch["image"])
        in_batch = set(batch["index"].tolist())
        per_image: list[list[torch.Tensor] | None] = [None] * len(batch["category"])
        for category in dict.fromkeys(batch["category"]):
            others = [i for i in groups[category] if i not in in_batch] or groups[category]
            chosen = torch.randperm(len(others), generator=generator)[: self.train_shots].tolist()
            references = self.encode(torch.stack([dataset[others[i]]["image"] for i in chosen]))
            references = [flatten_positions(r) for r in references]
            for row, name in enumerate(batch["category"]):
                if name == category:
                    per_image[row] = self.residuals([f[row: row + 1] for f in features], references)
        return [torch.cat([image[level] for image in per_image]) for level in range(len(features))]

    @torch.no_grad()
    def training_statistics(self, dataset: Dataset, groups: dict[str, list[int]],
                            progress: bool = True) -> dict[str, list[float]]:
        """Mean and std of each level's NLL per dimension over all positions of the training images (references
        drawn as in training): the scale on which levels are summed at test time."""
        loader = DataLoader(IndexedDataset(dataset), batch_size=self.batch_size, shuffle=False)
        generator = torch.Generator().manual_seed(self.seed + 2)
        head = self.head.eval()
        moments = torch.zeros(len(head.flows), 3, dtype=torch.float64)  # per level: count, sum, sum of squares
        for batch in tqdm(loader, desc="ResAD training statistics", disable=not progress, leave=False):
            constrained = head.constrain(self.training_residuals(dataset, groups, batch, generator))
            for level, logp in enumerate(head.log_likelihood_maps(constrained)):
                nll = -logp.double().cpu()
                moments[level] += torch.stack([torch.tensor(float(nll.numel()), dtype=torch.float64), nll.sum(),
                                               (nll**2).sum()])
        count, total, squares = moments.unbind(dim=1)
        mean = total / count
        std = torch.sqrt(torch.clamp(squares / count - mean**2, min=0)) + 1e-6
        return {"mean": mean.tolist(), "std": std.tolist()}

    # -- references ---------------------------------------------------------------------------------
    @torch.no_grad()
    def add_references(self, category: str, images: Dataset, progress: bool = False) -> "ResAD":
        """Encode a class's normal reference images once; stored per level as (shots, C, h, w) in the given
        order, so ``use_references(category, k)`` takes the first k."""
        self.check_fitted()
        if len(images) == 0:
            raise ValueError(f"No reference images given for '{category}'.")
        loader = DataLoader(images, batch_size=self.batch_size, shuffle=False)
        levels, paths = None, []
        for batch in tqdm(loader, desc=f"References {category}", disable=not progress, leave=False):
            features = self.encode(batch["image"])
            levels = features if levels is None else [torch.cat([a, b]) for a, b in zip(levels, features, strict=True)]
            paths.extend(batch["path"])
        self.references_[category] = levels
        self.reference_paths_[category] = [str(p) for p in paths]
        return self

    def use_references(self, category: str, shots: int | None = None) -> "ResAD":
        """Score the next images against the first ``shots`` (default ``self.shots``) references of ``category``."""
        self.check_fitted()
        if category not in self.references_:
            known = ", ".join(self.references_) or "none yet"
            raise KeyError(f"No references for '{category}' (have: {known}); call "
                           f"add_references('{category}', normal_images) first.")
        shots = self.shots if shots is None else shots
        available = len(self.references_[category][0])
        if not 1 <= shots <= available:
            raise ValueError(f"'{category}' has {available} reference images; cannot use {shots} shots.")
        self._selected = (category, shots)
        return self

    def save_references(self, category: str, path: str | Path) -> Path:
        """One safetensors file with the class's reference features per level, written atomically."""
        metadata = {"category": category, "backbone": self.backbone, "layers": json.dumps(list(self.extractor.layers)),
                    "image_size": json.dumps(list(self.image_size_)), "weights": str(self.weights),
                    "paths": json.dumps(self.reference_paths_[category])}
        tensors = {f"level{i}": t.detach().cpu().contiguous() for i, t in enumerate(self.references_[category])}
        with atomic_file(path) as staging:
            save_file(tensors, str(staging), metadata=metadata)
        return Path(path)

    def load_references(self, path: str | Path) -> str:
        """Read a file of ``save_references``; checks it was made with this encoder and image size."""
        from safetensors import safe_open

        self.check_fitted()
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        expected = {"backbone": self.backbone, "layers": json.dumps(list(self.extractor.layers)),
                    "image_size": json.dumps(list(self.image_size_)), "weights": str(self.weights)}
        wrong = {k: metadata.get(k) for k, v in expected.items() if metadata.get(k) != v}
        if wrong:
            raise ValueError(f"{path} was made with {wrong}, not {expected}: delete it to extract the references "
                             "again with this model.")
        tensors = load_file(str(path))
        category = metadata["category"]
        self.references_[category] = [tensors[f"level{i}"].to(self.torch_device) for i in range(len(tensors))]
        self.reference_paths_[category] = json.loads(metadata["paths"])
        return category

    def selected_references(self) -> tuple[str, list[torch.Tensor]]:
        """The class and its reference features (M_l, C) per level that ``predict`` uses."""
        if self._selected is None:
            if len(self.references_) != 1:
                known = ", ".join(self.references_) or "none yet"
                raise RuntimeError(f"Which class are the images of? Call use_references(category, shots) first "
                                   f"(references for: {known}).")
            self.use_references(next(iter(self.references_)))
        category, shots = self._selected
        return category, [flatten_positions(level[:shots]) for level in self.references_[category]]

    # -- predict -----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> ModelOutput:
        """Image scores (N,) and anomaly maps (N, H, W) of images of the selected class (``use_references``)."""
        self.check_fitted()
        _, references = self.selected_references()
        head = self.head.eval()
        constrained = head.constrain(self.residuals(self.encode(images), references))
        mean, std = self.nll_statistics_["mean"], self.nll_statistics_["std"]
        levels = [(-logp - m) / s for logp, m, s in zip(head.log_likelihood_maps(constrained), mean, std, strict=True)]
        maps = gaussian_blur(upsample_sum(levels, tuple(images.shape[-2:])))
        return ModelOutput(maps.flatten(1).amax(dim=1).float().cpu().numpy(), maps.float().cpu().numpy())

    # -- persistence -------------------------------------------------------------------------------
    def learned_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        for category, levels in self.references_.items():
            tensors.update({f"references/{category}/{i}": t for i, t in enumerate(levels)})
        return tensors

    def learned_values(self) -> dict[str, Any]:
        return {"seen_classes": self.seen_classes_, "image_size": list(self.image_size_), "losses": self.losses_,
                "nll_statistics": self.nll_statistics_, "reference_paths": self.reference_paths_}

    def load_learned(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        self._head = None
        self.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        self.seen_classes_ = list(values["seen_classes"])
        self.image_size_ = tuple(values["image_size"])
        self.losses_ = list(values["losses"])
        self.nll_statistics_ = dict(values["nll_statistics"])
        self.reference_paths_ = dict(values["reference_paths"])
        self.references_ = {}
        for category in self.reference_paths_:
            count = sum(1 for k in tensors if k.startswith(f"references/{category}/"))
            self.references_[category] = [tensors[f"references/{category}/{i}"].to(self.torch_device)
                                          for i in range(count)]
        self._selected = None


