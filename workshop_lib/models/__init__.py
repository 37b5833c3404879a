"""One file per method, all on the protocol of base.AnomalyModel."""

from .base import AnomalyModel, ModelOutput, load_model
from .patchcore import PatchCore
from .rd4ad import RD4AD

__all__ = ["AnomalyModel", "ModelOutput", "PatchCore", "RD4AD", "load_model"]
