"""Shared fixtures: one synthetic dataset per test run, offline hub, small sizes."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing hub file fails fast instead of hanging
os.environ.setdefault("TQDM_DISABLE", "1")

from workshop_lib.data import make_synthetic_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# CI size: small images, few of them. Every test and notebook run reads this one dataset.
SYNTHETIC = {"n_train": 30, "n_test_good": 10, "n_test_defect": 5, "image_size": 128, "seed": 0}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """The synthetic MVTec-layout dataset, made once per run (reused across runs via WORKSHOP_TEST_DATA)."""
    shared = os.environ.get("WORKSHOP_TEST_DATA")
    root = Path(shared) if shared else tmp_path_factory.mktemp("data") / "synthetic"
    return make_synthetic_dataset(root, **SYNTHETIC)
