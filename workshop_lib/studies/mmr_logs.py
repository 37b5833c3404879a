"""The official MMR code's training logs (zhangzilongc/MMR ``tools/train.py``) as rows of the few-shot study's table,
so a published or earlier study can be plotted beside a fresh one."""

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .fewshot import COLUMNS

# Keyed on message text, not line numbers, so logs of later MMR versions parse too.
MMR_CONFIG = re.compile(r"path_to_config is .*?(\d+(?:\.\d+)?)_percent_(\d+)_seed")
MMR_LOADER = re.compile(r"the data in current individual_dataloader (\S+) are (\d+)\.")
MMR_DOMAIN = re.compile(r"current domain shift mode is (\S+?)!")
MMR_METRICS = {
    "instance_auroc": re.compile(r"'s Image_Level AUROC is (\d+(?:\.\d+)?)\.%"),
    "full_pixel_auroc": re.compile(r"'s Full_Pixel_Level AUROC is (\d+(?:\.\d+)?)\.%"),
    "full_pro": re.compile(r"'s per-region-overlap \(PRO\) AUROC is (\d+(?:\.\d+)?)\.%"),
}


def parse_mmr_log(text: str) -> list[dict]:
    """Rows of one log of the official MMR code: one per evaluated domain, AUROCs as fractions (0-1).

    ``tier`` and ``seed`` come from the ``<pct>_percent_<seed>_seed`` config path (NaN if absent), ``shots``
    from the train-loader size line, ``domain`` from the preceding domain-shift line (the loader name if there
    is none, as on MVTec). The "Mean ..." lines are skipped: ``add_domain_mean`` recomputes them.
    """
    rows: list[dict] = []
    state = {"method": "MMR", "category": "", "tier": np.nan, "seed": np.nan, "shots": np.nan, "domain": ""}
    row: dict | None = None
    for line in text.splitlines():
        if match := MMR_CONFIG.search(line):
            state.update(tier=float(match[1]), seed=int(match[2]))
        elif match := MMR_LOADER.search(line):
            row = None
            state.update(category=match[1], shots=int(match[2]), domain=match[1])
        elif match := MMR_DOMAIN.search(line):
            row = None
            state["domain"] = match[1]
        for metric, pattern in MMR_METRICS.items():
            if match := pattern.search(line):
                if row is None:
                    row = {**state, "instance_auroc": np.nan, "full_pixel_auroc": np.nan, "full_pro": np.nan,
                           "fit_seconds": np.nan}
                    rows.append(row)
                row[metric] = float(match[1]) / 100
    return rows


def read_mmr_logs(*paths: str | Path) -> pd.DataFrame:
    """MMR log files (or folders searched for ``*.log``) as one table with the study's columns."""
    files = [f for p in map(Path, paths) for f in (sorted(p.rglob("*.log")) if p.is_dir() else [p])]
    rows = [row for f in files for row in parse_mmr_log(f.read_text(errors="replace"))]
    return pd.DataFrame(rows, columns=list(COLUMNS))
