"""``python -m workshop_lib compare --preset workshop --data_path ... -d CAT ...``: the leaderboard of all five
methods (``studies.leaderboard``); resumable, in local processes or as a Slurm job array, merged into one CSV and
one figure. ``compare-task`` is what each process and Slurm task runs."""

import argparse
import json
from pathlib import Path

from ..data import LAYOUTS
from ..data.transforms import CROPS
from ..io import atomic_file
from ..plotting import plot_leaderboard, save_figure
from ..studies.leaderboard import METHODS, Leaderboard, collect, published_table, run_board, run_task, write_slurm


def add_compare_commands(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser("compare", help="the leaderboard: every method on the same categories and images")
    compare.add_argument("--output", default="leaderboard", help="board folder (board.json, results/, the CSV)")
    compare.add_argument("--data_path", required=True, help="dataset root folder")
    compare.add_argument("--dataset", default="mvtec", choices=LAYOUTS, help="dataset layout")
    compare.add_argument("-d", "--subdatasets", action="append", required=True, metavar="CATEGORY",
                         help="category (repeat)")
    compare.add_argument("--preset", default="workshop", choices=("auto", "paper", "workshop"))
    compare.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    compare.add_argument("--resize", type=int, default=128)
    compare.add_argument("--imagesize", type=int, default=128, help="the same input size for every method")
    compare.add_argument("--crop", choices=CROPS, default="center")
    compare.add_argument("--overrides", type=json.loads, default={},
                         help='per method, settings over the preset, as JSON: \'{"rd4ad": {"epochs": 2}}\'')
    compare.add_argument("--workers", type=int, default=1, help="local processes at once")
    compare.add_argument("--slurm", action="store_true", help="write a Slurm job array instead of running")
    compare.add_argument("--sbatch", action="append", default=[], help='extra option, e.g. "--gres=gpu:1"')
    compare.set_defaults(handler=run_compare)
    task = commands.add_parser("compare-task", help="one method on one category of a leaderboard (for workers)")
    task.add_argument("folder")
    task.add_argument("task", help="<method>/<category>")
    task.set_defaults(handler=lambda args: run_task(Leaderboard.load(args.folder), args.task))


def run_compare(args: argparse.Namespace):
    board = Leaderboard(Path(args.output), args.data_path, args.subdatasets, args.dataset, args.preset, args.methods,
                        args.resize, args.imagesize, args.crop, args.overrides)
    if args.slurm:
        scripts = write_slurm(board, sbatch_options=tuple(args.sbatch))
        print("\n".join(f"sbatch {s}" for s in scripts if s.suffix == ".sh") + "\nthen run the same compare again "
              "(without --slurm) to merge the results")
        return scripts
    table = run_board(board, args.workers) if board.pending() else collect(board)
    with atomic_file(board.folder / "leaderboard.csv") as staging:
        table.to_csv(staging, index=False)
    published = published_table()
    save_figure(plot_leaderboard(table, published), board.folder / "leaderboard.png")
    print(table.round(3).to_string(index=False))
    print("\nPublished MVTec AD means:\n" + published.to_string(index=False))
    return table
