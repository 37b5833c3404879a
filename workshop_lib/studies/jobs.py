"""Running a study's list of runs: here, in local processes (each run its own process, a share of the cores), or on
a cluster as Slurm scripts: a job array (one task per run) or two jobs that each run half of the list one after
another (the ETH MMR study's way). Each run is ``<command> <run>``; a finished run skips itself, so the scripts can
be re-written and re-submitted, and local runs restarted, after an interruption."""

import math
import os
import shlex
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from ..io import atomic_file


def run_locally(command: Sequence[str], runs: Sequence[str], log_folder: Path, workers: int = 1,
                description: str = "runs") -> list[Path]:
    """``command + [run]`` for every run in ``workers`` processes at once, each with its share of the cores, logged
    to ``<log_folder>/<run>.log``; returns the logs of the runs that failed."""
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    def run_one(run: str) -> Path | None:
        log = log_folder / f"{run}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as stream:
            code = subprocess.run([*command, run], stdout=stream, stderr=subprocess.STDOUT, env=env).returncode
        return log if code else None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        logs = list(tqdm(pool.map(run_one, runs), total=len(runs), desc=description))
    return [log for log in logs if log is not None]



def slurm_header(job_name: str, time_limit: str, output: str, sbatch_options: Sequence[str]) -> list[str]:
    return ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --time={time_limit}",
            f"#SBATCH --output={output}", *(f"#SBATCH {option}" for option in sbatch_options)]


def write_job_scripts(folder: Path, name: str, runs: Sequence[str], command: str, halves: bool = False,
                      time_limit: str = "70:00:00", sbatch_options: Sequence[str] = ()) -> list[Path]:
    """``<folder>/runs.txt`` and ``<folder>/<name>_array.sh`` (``sbatch`` it: task i runs line i + 1), or with
    ``halves=True`` ``<name>_half1.sh`` and ``<name>_half2.sh``; logs go to ``<folder>/logs/``."""
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    setup = ["set -uo pipefail", f"cd {shlex.quote(os.getcwd())}"]
    runs_file = folder / "runs.txt"
    scripts = {runs_file: "\n".join(runs) + "\n"}
    if halves:
        middle = math.ceil(len(runs) / 2)
        for number, part in enumerate((runs[:middle], runs[middle:]), start=1):
            lines = slurm_header(f"{name}-{number}", time_limit, str(folder / "logs" / f"half{number}_%j.out"),
                                 sbatch_options) + setup + ["status=0", "for RUN in \\"]
            lines += [f"    {shlex.quote(run)} \\" for run in part]
            lines += ["; do", f'    {command} "$RUN" || status=1', "done", "exit $status"]
            scripts[folder / f"{name}_half{number}.sh"] = "\n".join(lines) + "\n"
    else:
        lines = slurm_header(name, time_limit, str(folder / "logs" / "%A_%a.out"), sbatch_options)
        lines += [f"#SBATCH --array=0-{len(runs) - 1}", *setup,
                  f'RUN=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(runs_file))})',
                  f'{command} "$RUN"']
        scripts[folder / f"{name}_array.sh"] = "\n".join(lines) + "\n"
    for path, text in scripts.items():
        with atomic_file(path) as staging:
            staging.write_text(text)
    return list(scripts)
