"""The model protocol every method follows: configure in __init__, learn in fit, score in predict, save/load.

As in scikit-learn, constructor arguments are the configuration and are stored unchanged; what ``fit`` learns
ends with an underscore. ``save`` writes one folder: ``config.json`` (method name + configuration + extra
learned values) and ``tensors.safetensors`` (learned tensors), so loading never unpickles arbitrary objects.
"""

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from ..data.dataset import preprocessing_of
from ..data.transforms import Preprocessing
from ..errors import ModelFileError
from ..io import atomic_dir

CONFIG_FILE = "config.json"
TENSORS_FILE = "tensors.safetensors"
REGISTRY: dict[str, type["AnomalyModel"]] = {}
# Set around fit, not by it: the training images' preprocessing, thresholds chosen on held-out normal images.
KEPT_WITH_MODEL = ("preprocessing_", "thresholds_")
# Settings that may change between a run and its resumed continuation.
RUN_TIME_SETTINGS = ("device", "checkpoint_dir", "checkpoint_every", "resume", "epochs")


@dataclass
class ModelOutput:
    """What ``predict`` returns for a batch: one score per image and one anomaly map per image."""

    image_scores: np.ndarray  # (N,) float32, higher = more anomalous
    anomaly_maps: np.ndarray  # (N, H, W) float32, at the input image's resolution


class AnomalyModel:
    """Base class: subclasses implement fit, predict, learned_tensors and load_learned."""

    method: ClassVar[str] = ""
    batch_size: int = 8  # images per batch; every method's constructor sets its own
    default_sizes: ClassVar[tuple[int, int]] = (256, 224)  # (resize, imagesize): the method's test transform

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.method:
            REGISTRY[cls.method] = cls

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, read back from the attributes of the same name."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def start_fit(self, dataset: Dataset) -> tuple[int, int]:
        """Check the training set (an empty one is an error that says what is needed), record its preprocessing
        (saved with the model, used again to evaluate it) and return the (height, width) of its images."""
        if len(dataset) == 0:
            raise ValueError(f"The training dataset is empty: {type(self).__name__} needs normal images to learn from.")
        self.preprocessing_ = preprocessing_of(dataset)
        return tuple(int(s) for s in dataset[0]["image"].shape[-2:])

    def training_settings(self) -> dict[str, Any]:
        """What a checkpoint must have been written with to be resumed: the configuration without the run-time
        settings (device, checkpoint folder and frequency, resume, epochs), and the preprocessing; JSON-normalised."""
        config = {k: v for k, v in self.get_config().items() if k not in RUN_TIME_SETTINGS}
        preprocessing = getattr(self, "preprocessing_", None)
        config["preprocessing"] = preprocessing.as_dict() if preprocessing is not None else None
        return json.loads(json.dumps(config, default=str))

    def progress_label(self, dataset: Dataset) -> str:
        """The progress bars' label: the method and the dataset's category."""
        return f"{type(self).__name__} {getattr(dataset, 'category', '')}".strip()

    def is_fitted(self) -> bool:
        """Whether ``fit`` (or ``load``) set what it learns: attributes ending with an underscore."""
        return any(k.endswith("_") and not k.startswith("_") and k not in KEPT_WITH_MODEL for k in vars(self))

    def check_fitted(self) -> None:
        if not self.is_fitted():
            raise RuntimeError(f"This {type(self).__name__} is not fitted yet: call fit(train_dataset) first.")

    def trainable_parameters(self) -> int:
        """Parameters that fit trains (0 for PatchCore, whose frozen backbone only embeds): every parameter with
        ``requires_grad`` of the torch modules the model holds."""
        modules = [v for v in vars(self).values() if isinstance(v, torch.nn.Module)]
        return sum(p.numel() for module in modules for p in module.parameters() if p.requires_grad)

    def calibrated_scores(self, image_scores: np.ndarray) -> np.ndarray | None:
        """Raw image scores mapped to [0, 1] (0 normal, 0.5 borderline, 1 anomalous) by a method that learned a
        calibration in fit; None for methods without one."""
        return None

    def learned_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors learned by fit, saved to tensors.safetensors."""
        raise NotImplementedError

    def learned_values(self) -> dict[str, Any]:
        """JSON-serialisable values learned by fit (thresholds, statistics), saved in config.json."""
        return {}

    def load_learned(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        """Restore what fit learned from what save wrote."""
        raise NotImplementedError

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model folder atomically; an existing folder is replaced only with ``overwrite=True``."""
        self.check_fitted()
        with atomic_dir(path, overwrite) as staging:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.learned_tensors().items()}
            save_file(tensors, str(staging / TENSORS_FILE))
            preprocessing = getattr(self, "preprocessing_", None)
            document = {"method": self.method, "config": self.get_config(), "learned": self.learned_values(),
                        "preprocessing": preprocessing.as_dict() if preprocessing is not None else None,
                        "thresholds": getattr(self, "thresholds_", None)}
            (staging / CONFIG_FILE).write_text(json.dumps(document, indent=2, default=str))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> "AnomalyModel":
        """Load a saved model; ``overrides`` change run-time settings such as ``device``."""
        path = Path(path)
        config_file, tensors_file = path / CONFIG_FILE, path / TENSORS_FILE
        if not config_file.is_file() or not tensors_file.is_file():
            raise ModelFileError(
                f"{path} is not a saved model folder (expected {CONFIG_FILE} and {TENSORS_FILE}). "
                "Train with --save_model (or model.save(path)) first."
            )
        document = json.loads(config_file.read_text())
        model_cls = REGISTRY.get(document.get("method", ""))
        if model_cls is None or not issubclass(model_cls, cls):
            raise ModelFileError(f"{path} holds a {document.get('method')!r} model, not a {cls.__name__}.")
        model = model_cls(**{**document["config"], **overrides})
        model.load_learned(load_file(str(tensors_file)), document.get("learned", {}))
        preprocessing = document.get("preprocessing")  # absent in models saved by earlier versions
        model.preprocessing_ = Preprocessing.from_dict(preprocessing) if preprocessing else None
        model.thresholds_ = document.get("thresholds")
        return model


def load_model(path: str | Path, **overrides: Any) -> AnomalyModel:
    """Load any saved model, whatever its method."""
    return AnomalyModel.load(path, **overrides)
