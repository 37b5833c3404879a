"""RD4AD for deployment: one ONNX graph (network, anomaly map, score and calibrated score) and a Triton model
repository around it, as the Matroid fork (nraghuraman-matroid/RD4AD-fork) deploys it; ``onnx_difference`` checks
the graph against PyTorch with onnxruntime."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..device import resolve_device
from ..io import atomic_dir, atomic_file
from ..models.rd4ad import RD4AD, STATS_FILE, RD4ADNetwork

ONNX_INPUT = "images"
ONNX_OUTPUTS = ("anomaly_map", "score", "calibrated_score")


class ScoringGraph(nn.Module):
    """What is exported: the network plus the calibrated score, with the calibration baked in as constants."""

    def __init__(self, network: RD4ADNetwork, borderline: float, scale: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("borderline", torch.tensor(borderline, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps, scores = self.network(images)
        return maps, scores, torch.sigmoid((scores - self.borderline) / self.scale)


def export_onnx(model: RD4AD, path: str | Path) -> Path:
    """Write an ONNX model: float32 ``images`` (N, 3, H, W, ImageNet-normalised) -> ``anomaly_map`` (N, H, W),
    ``score`` (N,), ``calibrated_score`` (N,); the batch dimension is dynamic. Exported on the CPU."""
    model.check_fitted()
    graph = ScoringGraph(model.network, *model.calibration()).cpu().eval()
    example = torch.zeros(2, 3, *model.image_size_)
    batch = torch.export.Dim("batch", min=1, max=1024)
    path = Path(path)
    try:
        with atomic_file(path) as staging:
            program = torch.onnx.export(graph, (example,), dynamo=True, input_names=[ONNX_INPUT],
                                        output_names=list(ONNX_OUTPUTS), dynamic_shapes=({0: batch},),
                                        verbose=False)
            program.save(str(staging), external_data=False)
    finally:
        model.network.to(resolve_device(model.device))
    return path


def onnx_difference(model: RD4AD, onnx_path: str | Path, images: torch.Tensor) -> dict[str, float]:
    """Max absolute difference between PyTorch and onnxruntime (CPU) outputs on ``images``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_maps, onnx_scores, onnx_calibrated = session.run(list(ONNX_OUTPUTS), {ONNX_INPUT: images.numpy()})
    output = model.predict(images)
    return {"anomaly_map": float(np.abs(onnx_maps - output.anomaly_maps).max()),
            "score": float(np.abs(onnx_scores - output.image_scores).max()),
            "calibrated_score": float(np.abs(onnx_calibrated - model.calibrated_scores(output.image_scores)).max())}


def triton_config(name: str, image_size: Sequence[int], max_batch_size: int) -> str:
    """config.pbtxt for Triton's ONNX Runtime backend; the batch dimension is implicit (max_batch_size > 0),
    and the per-image scores are reshaped from [1] to scalars."""
    height, width = image_size
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [
  {{ name: "{ONNX_INPUT}" data_type: TYPE_FP32 dims: [ 3, {height}, {width} ] }}
]
output [
  {{ name: "{ONNX_OUTPUTS[0]}" data_type: TYPE_FP32 dims: [ {height}, {width} ] }},
  {{ name: "{ONNX_OUTPUTS[1]}" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }},
  {{ name: "{ONNX_OUTPUTS[2]}" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }}
]
dynamic_batching {{ }}
"""


def write_triton_repository(model: RD4AD, repository: str | Path, name: str = "rd4ad", max_batch_size: int = 8,
                            overwrite: bool = False) -> Path:
    """``<repository>/<name>/{config.pbtxt, 1/model.onnx, 1/training_stats.json}``, written atomically."""
    with atomic_dir(Path(repository) / name, overwrite) as staging:
        export_onnx(model, staging / "1" / "model.onnx")
        model.write_training_stats(staging / "1" / STATS_FILE)
        (staging / "config.pbtxt").write_text(triton_config(name, model.image_size_, max_batch_size))
    return Path(repository) / name
