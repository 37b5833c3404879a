"""Speed of a model's network alone, on inputs already on its device (the Matroid RD4AD fork's ``fps`` action)."""

import time
from collections.abc import Sequence
from typing import Any

import torch

from .device import describe_device
from .models.components.teacher import TeacherStudentModel


def measure_fps(model: TeacherStudentModel, image_size: Sequence[int], batch_size: int = 1, warmup: int = 3,
                iterations: int = 10) -> dict[str, Any]:
    """Images per second of the network alone (teacher, student, map, smoothing, score) on random inputs
    already on the device, after ``warmup`` untimed batches; CUDA is synchronised around the timing."""
    network = model.network.eval()
    device = model.torch_device
    images = torch.randn(batch_size, 3, *image_size, generator=torch.Generator().manual_seed(0)).to(device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        for _ in range(warmup):
            network(images)
        synchronize()
        started = time.perf_counter()
        for _ in range(iterations):
            network(images)
        synchronize()
        elapsed = time.perf_counter() - started
    count = batch_size * iterations
    return {"images_per_second": count / elapsed, "seconds_per_image": elapsed / count, "batch_size": batch_size,
            "image_size": list(image_size), "device": describe_device(device), "backbone": model.backbone}
