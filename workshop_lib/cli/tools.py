"""``weights list|fetch`` (where each backbone's ImageNet weights come from) and ``data synthetic|download-mvtec``."""

import argparse
from pathlib import Path

from ..backbones import BACKBONES, OTHER_TIMM_WEIGHTS, fetch_weights, weights_table
from ..data import make_synthetic_aebad, make_synthetic_dataset
from ..data.download import download_mvtec


def add_tool_commands(commands: argparse._SubParsersAction, parser_class: type[argparse.ArgumentParser]) -> None:
    weights = commands.add_parser("weights", help="where each backbone's (and MMR's student's) weights come from")
    weights_sub = weights.add_subparsers(dest="action", required=True, parser_class=parser_class)
    weights_sub.add_parser("list").set_defaults(handler=run_weights_list)
    fetch = weights_sub.add_parser("fetch", help="download weights into the local cache (needs network)")
    names = [*BACKBONES, *OTHER_TIMM_WEIGHTS]
    fetch.add_argument("backbones", nargs="*", default=names,
                       help="backbones or timm checkpoints (default: all): " + ", ".join(names))
    fetch.set_defaults(handler=run_weights_fetch)

    data = commands.add_parser("data", help="datasets")
    data_sub = data.add_subparsers(dest="action", required=True, parser_class=parser_class)
    synthetic = data_sub.add_parser("synthetic", help="write the synthetic MVTec-layout dataset")
    synthetic.add_argument("root")
    synthetic.add_argument("--layout", choices=("mvtec", "aebad"), default="mvtec",
                           help="aebad: AeBAD-S layout with domain shifts (washer; test counts are per domain)")
    synthetic.add_argument("--n_train", type=int, default=30)
    synthetic.add_argument("--n_test_good", type=int, default=10)
    synthetic.add_argument("--n_test_defect", type=int, default=5)
    synthetic.add_argument("--image_size", type=int, default=128)
    synthetic.add_argument("--width_factor", type=int, default=1,
                           help="wide frames: image_size high, this many times as wide (mvtec layout)")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.set_defaults(handler=run_synthetic)
    mvtec = data_sub.add_parser("download-mvtec", help="download MVTec AD (4.9 GB, checksum-verified)")
    mvtec.add_argument("data_dir", help="folder that will hold mvtec_anomaly_detection/")
    mvtec.set_defaults(handler=lambda args: download_mvtec(args.data_dir))


def run_weights_list(args: argparse.Namespace) -> list[dict]:
    rows = weights_table()
    for row in rows:
        state = "available" if row["available"] else "missing"
        print(f"{row['backbone']:<26} {row['source']:<55} {state:<10} {row['location']}")
    return rows


def run_weights_fetch(args: argparse.Namespace) -> dict:
    fetched = {}
    for name in args.backbones:
        fetched[name] = fetch_weights(name)
        print(f"{name}: {fetched[name]}")
    return fetched


def run_synthetic(args: argparse.Namespace) -> Path:
    sizes = dict(n_train=args.n_train, n_test_good=args.n_test_good, n_test_defect=args.n_test_defect,
                 image_size=args.image_size, seed=args.seed)
    if args.layout == "aebad":
        root = make_synthetic_aebad(args.root, **sizes)
    else:
        root = make_synthetic_dataset(args.root, **sizes, width_factor=args.width_factor)
    print(f"Synthetic dataset in {root}")
    return root
