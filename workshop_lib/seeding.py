"""Seeds: the same seed and the same data give the same numbers on the same machine."""

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (once per run, before anything draws from them)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int, devices: Sequence[torch.device] = (), numpy: bool = False) -> Iterator[None]:
    """Run the body with torch's global generator (and numpy's with ``numpy=True``) seeded, then give the caller's
    state back: building a seeded network or drawing a seeded projection leaves the caller's random stream as it was.
    ``devices``: CUDA devices whose generators are seeded and restored too."""
    numpy_state = np.random.get_state() if numpy else None
    with torch.random.fork_rng(devices=[d for d in devices if d.type == "cuda"]):
        torch.manual_seed(seed)
        if numpy:
            np.random.seed(seed)
        try:
            yield
        finally:
            if numpy_state is not None:
                np.random.set_state(numpy_state)
