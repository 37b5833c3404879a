"""One file per method, all on the protocol of base.AnomalyModel."""

from .base import AnomalyModel, ModelOutput, load_model
from .patchcore import PatchCore

__all__ = ["AnomalyModel", "ModelOutput", "PatchCore", "load_model"]
