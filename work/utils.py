"""The workshop's helpers, as in the first edition, now on top of workshop_lib.

    from utils import ALL_CATEGORIES, commandline_args, get_train_args, get_evaluate_args, trainer, evaluator
    with commandline_args(*get_train_args("0000", ("experiments", "step1"), ("bottle",))):
        trainer()

``trainer``/``evaluator`` return their results and never call ``sys.exit``, so no ``try/except SystemExit``
is needed; ``commandline_args`` restores ``sys.argv`` even when the run fails.
"""

from pathlib import Path

from workshop_lib.cli import commandline_args
from workshop_lib.cli import main as trainer
from workshop_lib.data import MVTEC_CATEGORIES, resolve_aebad_root, resolve_data_root
from workshop_lib.tasks import get_evaluate_args, get_train_args

WORK_DIR = Path(__file__).resolve().parent
ALL_CATEGORIES = MVTEC_CATEGORIES
evaluator = trainer

__all__ = ["ALL_CATEGORIES", "WORK_DIR", "aebad_data", "commandline_args", "data_root", "evaluator",
           "get_evaluate_args", "get_train_args", "trainer"]


def data_root() -> str:
    """MVTec AD in work/data/mvtec_anomaly_detection when present, else the synthetic dataset (made once)."""
    return str(resolve_data_root(WORK_DIR)[0])


def aebad_data() -> tuple[str, str]:
    """(root, category) of AeBAD-S in work/data/AeBAD when present, else of the synthetic domain-shift dataset."""
    root, category, _ = resolve_aebad_root(WORK_DIR)
    return str(root), category
