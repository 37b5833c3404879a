"""PatchCore: workshop_lib vs anomalib 2.7, side by side in one run, on the same data and the same weights.

    python benchmarks/patchcore_benchmark.py                # 200 train images, 224 px, as issue 3 asks
    python benchmarks/patchcore_benchmark.py --n_train 40   # a quick look

Columns: fit seconds, inference seconds per image (batch 1, after warm-up), peak RSS of the process, image and
pixel AUROC. Each side runs in its own process so peak memory is its own. Rows: wide_resnet50_2 with random
weights (the same tensors loaded into both), once with upstream's 1024-dim projection and once with none
(``:none``, anomalib's 1536-dim embedding), and efficientnet_lite0 with its bundled ImageNet weights (the same
module handed to anomalib). Also printed: our coreset selection speed at N = 150k and our inference time at
1 % and 10 % coreset against the backbone forward, both as PatchCore runs it (up to its last layer) and whole.

anomalib lives in its own venv, used only here. Create it once (about 2 minutes):

    python3 -m venv benchmarks/.venv-anomalib
    benchmarks/.venv-anomalib/bin/pip install "anomalib[cpu]==2.7.0"

Its KCenterGreedy fragments memory until the process is killed unless MALLOC_MMAP_THRESHOLD_=131072 is set,
which this script does for that column.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
ANOMALIB_PYTHON = HERE / ".venv-anomalib" / "bin" / "python"
CONFIGS = ("wide_resnet50_2:random", "wide_resnet50_2:random:none", "efficientnet_lite0:imagenet")


def prepare_data(n_train: int, image_size: int) -> tuple[Path, np.ndarray]:
    """Synthetic 'washer' images as one npz of normalised tensors, plus the test masks."""
    from workshop_lib.data import load_dataset, make_synthetic_dataset

    root = make_synthetic_dataset(DATA / f"synthetic-{n_train}-{image_size}", categories=("washer",),
                                  n_train=n_train, n_test_good=20, n_test_defect=10, image_size=image_size)
    train = load_dataset(root, "washer", "train", resize=image_size, imagesize=image_size)
    test = load_dataset(root, "washer", "test", resize=image_size, imagesize=image_size)
    tensors = DATA / f"tensors-{n_train}-{image_size}.npz"
    if not tensors.is_file():
        np.savez(tensors, train=np.stack([item["image"].numpy() for item in train]),
                 test=np.stack([item["image"].numpy() for item in test]),
                 labels=np.asarray(test.labels), masks=np.stack([item["mask"][0].numpy() > 0.5 for item in test]))
    with np.load(tensors) as data:
        return tensors, data["masks"]


def save_network(backbone: str, weights: str) -> tuple[str, Path]:
    """The full timm network's state_dict, so both sides load exactly the same tensors."""
    from workshop_lib.backbones import backbone_spec, build_network

    spec = backbone_spec(backbone)
    path = DATA / f"{backbone}-{weights}.pth"
    if not path.is_file():
        network = build_network(spec, None if weights == "random" else weights, seed=0)
        torch.save(network.state_dict(), path)
    return spec.architecture, path


def timed_per_image(forward, images: torch.Tensor) -> tuple[float, list]:
    """Mean seconds of ``forward`` on each image alone (batch 1), after one warm-up call, and its outputs."""
    with torch.no_grad():
        forward(images[:1])
        started = time.perf_counter()
        outputs = [forward(image[None]) for image in images]
    return (time.perf_counter() - started) / len(images), outputs


def run_ours(tensors: Path, backbone: str, state_dict: Path, output: Path, coreset_ratio: float,
             projection: bool) -> dict:
    """Worker body: fit and time our PatchCore in this process."""
    from workshop_lib.backbones import backbone_spec, build_network
    from workshop_lib.models import PatchCore

    data = np.load(tensors)
    train = [{"image": torch.from_numpy(image)} for image in data["train"]]
    test = torch.from_numpy(data["test"])
    dims = {} if projection else {"pretrain_embed_dimension": None, "target_embed_dimension": None}
    model = PatchCore(backbone, weights=str(state_dict), coreset_ratio=coreset_ratio, device="cpu", **dims)
    started = time.perf_counter()
    model.fit(train, progress=False)
    fit_seconds = time.perf_counter() - started
    infer_seconds, outputs = timed_per_image(model.predict, test)
    np.savez(output, scores=np.concatenate([o.image_scores for o in outputs]),
             maps=np.concatenate([o.anomaly_maps for o in outputs]))
    whole_network = build_network(backbone_spec(backbone), str(state_dict), seed=0).eval()
    return {"fit_s": fit_seconds, "infer_s_per_image": infer_seconds,
            "backbone_s_per_image": timed_per_image(model.extractor, test)[0],
            "whole_network_s_per_image": timed_per_image(whole_network, test)[0],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "memory_bank": int(model.memory_bank_.shape[0])}


def coreset_speed(n_points: int = 150_000, dim: int = 1024, n_select: int = 1500) -> float:
    """Points selected per second by our greedy coreset at N points (random features, 128-dim projection)."""
    from workshop_lib.models.components.coreset import greedy_coreset_indices

    features = torch.randn(n_points, dim, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    greedy_coreset_indices(features, n_select, progress=False)
    return n_select / (time.perf_counter() - started)


def our_worker_command(coreset_ratio: float, tensors: Path, backbone: str, state_dict: Path, output: Path,
                       embedding: str) -> list[str]:
    """This script as a worker fitting our PatchCore in a process of its own (so peak RSS is its own)."""
    return [sys.executable, __file__, "--coreset_ratio", str(coreset_ratio), "--worker", str(tensors), backbone,
            str(state_dict), str(output), embedding]


def worker_json(command: list[str], env: dict | None = None) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def accuracy(npz: Path, labels: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    from workshop_lib.metrics import auroc

    with np.load(npz) as data:
        return auroc(labels, data["scores"]), auroc(masks, data["maps"])


def print_row(backbone: str, weights: str, name: str, r: dict) -> None:
    """One table row, printed as soon as it is measured (a long anomalib run may be stopped)."""
    print(f"| {backbone} | {weights} | {name} | {r['fit_s']:.1f} | {r['infer_s_per_image'] * 1000:.0f} | "
          f"{r['peak_rss_mb']:.0f} | {r['auroc'][0]:.3f} | {r['auroc'][1]:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_train", type=int, default=200)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--coreset_ratio", type=float, default=0.1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS),
                        help="backbone:weights[:none] rows to run; ':none' = no embedding projection; anomalib "
                             "runs once per backbone:weights (default: %(default)s)")
    parser.add_argument("--skip_anomalib", action="store_true", help="only our rows (anomalib takes 30+ min)")
    parser.add_argument("--worker", nargs=5, metavar=("TENSORS", "BACKBONE", "STATE_DICT", "OUTPUT", "PROJECTION"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tensors, backbone, state_dict, output, projection = args.worker
        print(json.dumps(run_ours(Path(tensors), backbone, Path(state_dict), Path(output), args.coreset_ratio,
                                  projection == "projected")))
        return

    DATA.mkdir(exist_ok=True)
    tensors, masks = prepare_data(args.n_train, args.image_size)
    labels = np.load(tensors)["labels"]
    print(f"{args.n_train} train / {len(labels)} test images at {args.image_size} px, coreset "
          f"{args.coreset_ratio:.0%}, torch threads {torch.get_num_threads()}")
    with_anomalib = ANOMALIB_PYTHON.is_file() and not args.skip_anomalib
    if not ANOMALIB_PYTHON.is_file():
        print(f"anomalib column skipped: {ANOMALIB_PYTHON} not found (see this script's docstring).")
    print("| backbone | weights | implementation | fit s | infer ms/image | peak RSS MB | image AUROC | pixel AUROC |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    anomalib_done = set()
    for config in args.configs:
        backbone, weights, *projection = config.split(":")
        embedding = "none" if projection == ["none"] else "projected"
        name = "workshop_lib" if embedding == "projected" else "workshop_lib, no projection"
        architecture, state_dict = save_network(backbone, weights)
        ours_npz = DATA / f"ours-{backbone}-{embedding}.npz"
        ours = worker_json(our_worker_command(args.coreset_ratio, tensors, backbone, state_dict, ours_npz, embedding))
        ours["auroc"] = accuracy(ours_npz, labels, masks)
        print_row(backbone, weights, name, ours)
        small = worker_json(our_worker_command(0.01, tensors, backbone, state_dict, ours_npz, embedding))
        print(f"{backbone} ({name}): inference {ours['infer_s_per_image'] * 1000:.0f} ms/image at "
              f"{args.coreset_ratio:.0%} coreset, {small['infer_s_per_image'] * 1000:.0f} ms at 1 %; backbone up to "
              f"its last PatchCore layer {small['backbone_s_per_image'] * 1000:.0f} ms, whole network "
              f"{small['whole_network_s_per_image'] * 1000:.0f} ms -> ratio at 1 %: "
              f"{small['infer_s_per_image'] / small['backbone_s_per_image']:.2f} and "
              f"{small['infer_s_per_image'] / small['whole_network_s_per_image']:.2f}", flush=True)
        if with_anomalib and (backbone, weights) not in anomalib_done:
            from workshop_lib.backbones import backbone_spec

            anomalib_done.add((backbone, weights))
            layers = list(backbone_spec(backbone).patchcore_layers)
            anomalib_npz = DATA / f"anomalib-{backbone}.npz"
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            theirs = worker_json([str(ANOMALIB_PYTHON), str(HERE / "anomalib_worker.py"), "--tensors", str(tensors),
                                  "--architecture", architecture, "--state_dict", str(state_dict), "--layers",
                                  *layers, "--coreset_ratio", str(args.coreset_ratio), "--output",
                                  str(anomalib_npz)], env)
            theirs["auroc"] = accuracy(anomalib_npz, labels, masks)
            print_row(backbone, weights, "anomalib 2.7", theirs)
    print(f"\nCoreset selection at N = 150,000 (1024 dims -> 128): {coreset_speed():.0f} points/s")


if __name__ == "__main__":
    main()
