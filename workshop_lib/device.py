"""The one place that decides where tensors live: CUDA when present, Apple MPS, else CPU."""

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` into a device, failing clearly if unavailable."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but no CUDA GPU is visible. "
            "Use device='auto' (or --device auto) to fall back to the CPU."
        )
    return resolved


def describe_device(device: torch.device) -> str:
    """A human-readable line for notebooks: which device and, on a GPU, which card."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
