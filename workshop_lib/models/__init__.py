"""One file per method, all on the protocol of base.AnomalyModel."""

from .base import AnomalyModel, ModelOutput, load_model
from .mae_lora import MAELoRA
from .mmr import MMR
from .patchcore import PatchCore
from .rd4ad import RD4AD
from .resad import ResAD

__all__ = ["AnomalyModel", "MAELoRA", "MMR", "ModelOutput", "PatchCore", "RD4AD", "ResAD", "load_model"]
