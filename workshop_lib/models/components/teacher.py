"""The frozen teacher and the trained student: RD4AD and MMR learn a student that rebuilds a frozen CNN's features
of normal images (ResAD's encoder is the same frozen CNN), and score where the two disagree."""

from collections.abc import Sequence

import torch

from ...backbones import FeatureExtractor, Weights, backbone_spec
from ..base import AnomalyModel, ModelOutput


def frozen_teacher(backbone: str, layers: Sequence[str] | None, weights: Weights, seed: int) -> FeatureExtractor:
    """The backbone's ``layers`` (default: its layers of strides 4, 8, 16), frozen and in eval mode."""
    name = backbone_spec(backbone).name
    return FeatureExtractor(name, layers or backbone_spec(name).distillation_layers, weights, seed=seed)


class TeacherStudentModel(AnomalyModel):
    """A method whose ``network`` holds a frozen ``teacher`` and a trained ``student`` and maps images to (anomaly
    maps, image scores): RD4AD and MMR. The student is what fit learns and save writes."""

    @property
    def network(self) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def torch_device(self) -> torch.device:
        return next(self.network.student.parameters()).device

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> ModelOutput:
        """Image scores (N,) and anomaly maps (N, H, W) for a batch of normalised images (network in eval mode)."""
        self.check_fitted()
        maps, scores = self.network.eval()(images.to(self.torch_device))
        return ModelOutput(scores.float().cpu().numpy(), maps.float().cpu().numpy())

    def learned_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.network.student.state_dict())
