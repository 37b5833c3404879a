"""``python -m workshop_lib fewshot prepare|run|run-one|slurm|collect``: the few-shot decay study
(``studies.fewshot``) from the shell and from Slurm tasks."""

import argparse
import json
from pathlib import Path

from ..data.transforms import CROPS
from ..io import atomic_file
from ..models.base import REGISTRY
from ..studies.fewshot import (
    DEFAULT_SEEDS,
    DEFAULT_TIERS,
    Study,
    add_domain_mean,
    collect,
    merge_tables,
    prepare_subsets,
    run_one,
    run_study,
    summarize,
    write_slurm_scripts,
)
from ..studies.mmr_logs import read_mmr_logs


def add_fewshot_commands(top: argparse._SubParsersAction, parser_class: type[argparse.ArgumentParser]) -> None:
    fewshot = top.add_parser("fewshot", help="the few-shot decay study: subsets, runs, Slurm scripts, tables")
    commands = fewshot.add_subparsers(dest="action", required=True, parser_class=parser_class)
    prepare = commands.add_parser("prepare", help="write study.json and build every subset")
    prepare.add_argument("folder", help="study folder")
    prepare.add_argument("--data_root", required=True)
    prepare.add_argument("-d", "--category", action="append", required=True, dest="categories",
                         help="category folder under data_root, e.g. AeBAD_S (repeat for several)")
    prepare.add_argument("--layout", default="mvtec", help="mvtec, mpdd, mvtec3d, aebad_s or aebad_v")
    prepare.add_argument("--method", default="patchcore", help=", ".join(sorted(REGISTRY)))
    prepare.add_argument("--model_kwargs", type=json.loads, default={},
                         help='constructor arguments as JSON, e.g. \'{"backbone": "resnet18", "weights": null}\'')
    prepare.add_argument("--tiers", type=float, nargs="+", default=list(DEFAULT_TIERS))
    prepare.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    prepare.add_argument("--resize", type=int, default=256)
    prepare.add_argument("--imagesize", type=int, default=224)
    prepare.add_argument("--crop", choices=CROPS, default="center", help="center, none (whole frame) or pad")
    prepare.add_argument("--label", default="", help="method name in the tables (default: --method)")
    run = commands.add_parser("run", help="run every pending run here")
    run.add_argument("folder")
    run.add_argument("--workers", type=int, default=1, help="local processes")
    one = commands.add_parser("run-one", help="one run by name (what Slurm tasks call)")
    one.add_argument("folder")
    one.add_argument("run", help="<category>/<tier>_percent_<seed>_seed, as in slurm/runs.txt")
    slurm = commands.add_parser("slurm", help="write Slurm scripts for the pending runs")
    slurm.add_argument("folder")
    slurm.add_argument("--halves", action="store_true", help="the original's two jobs instead of a job array")
    slurm.add_argument("--time", default="70:00:00", help="time limit per job (array task or half)")
    slurm.add_argument("--sbatch", action="append", default=[], help='extra option, e.g. "--gres=gpu:1"')
    gather = commands.add_parser("collect", help="all rows as one CSV, with a summary per tier")
    gather.add_argument("folders", nargs="*", help="study folders")
    gather.add_argument("--mmr_logs", nargs="*", default=[], help="MMR log files or folders to merge in")
    gather.add_argument("--output", required=True, help="CSV to write")
    fewshot.set_defaults(handler=run_fewshot)



def run_fewshot(args: argparse.Namespace) -> object:
    if args.action == "prepare":
        tiers = [int(t) if t.is_integer() else t for t in args.tiers]
        study = Study(Path(args.folder), args.data_root, args.categories, layout=args.layout, method=args.method,
                      model_kwargs=args.model_kwargs, tiers=tiers, seeds=args.seeds, resize=args.resize,
                      imagesize=args.imagesize, crop=args.crop, label=args.label)
        study.save()
        return prepare_subsets(study)
    if args.action == "run":
        return run_study(Study.load(args.folder), workers=args.workers)
    if args.action == "run-one":
        return run_one(Study.load(args.folder), args.run)
    if args.action == "slurm":
        scripts = write_slurm_scripts(Study.load(args.folder), args.halves, args.time, args.sbatch)
        print("\n".join(f"sbatch {s}" for s in scripts if s.suffix == ".sh"))
        return scripts
    tables = [collect(*args.folders)] + ([read_mmr_logs(*args.mmr_logs)] if args.mmr_logs else [])
    table = merge_tables(*tables)
    with atomic_file(args.output) as staging:
        table.to_csv(staging, index=False)
    print(summarize(add_domain_mean(table)).to_string(index=False))
    return table
