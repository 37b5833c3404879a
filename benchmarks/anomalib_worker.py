"""anomalib's PatchCore on the benchmark data, run inside the separate anomalib venv (see patchcore_benchmark.py).

Self-contained on purpose: that venv has anomalib 2.7 and its own torch/timm, not workshop_lib.
Prints one JSON line: fit seconds, inference seconds per image, peak RSS, and writes scores/maps to an npz.
"""

import argparse
import json
import resource
import time

import numpy as np
import timm
import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tensors", required=True, help="npz with train/test images (normalised, NCHW)")
    parser.add_argument("--architecture", required=True)
    parser.add_argument("--state_dict", required=True)
    parser.add_argument("--layers", nargs="+", required=True)
    parser.add_argument("--coreset_ratio", type=float, default=0.1)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    # anomalib's coreset draws its sparse random projection from numpy's global generator (random_state=None) and
    # its first centre from torch's: both seeded, or its AUROC changes from run to run (0.968 and 0.972 pixel
    # AUROC in two unseeded runs on the same data).
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    data = np.load(args.tensors)
    network = timm.create_model(args.architecture, pretrained=False)
    network.load_state_dict(torch.load(args.state_dict, map_location="cpu", weights_only=True))
    # The same nn.Module our side uses, handed to anomalib (Patchcore(pre_trained=False) with these weights).
    model = PatchcoreModel(layers=args.layers, backbone=network.eval(), pre_trained=False)

    train = torch.from_numpy(data["train"])
    started = time.perf_counter()
    model.train()
    for start in range(0, len(train), args.batch_size):
        model(train[start:start + args.batch_size])
    model.subsample_embedding(args.coreset_ratio)
    fit_seconds = time.perf_counter() - started

    model.eval()
    test = torch.from_numpy(data["test"])
    with torch.no_grad():
        model(test[:1])  # warm-up
        scores, maps = [], []
        started = time.perf_counter()
        for image in test:
            output = model(image[None])
            scores.append(float(output.pred_score.reshape(-1)[0]))
            maps.append(output.anomaly_map.reshape(image.shape[-2:]).numpy())
        per_image = (time.perf_counter() - started) / len(test)
    np.savez(args.output, scores=np.asarray(scores), maps=np.stack(maps))
    print(json.dumps({"fit_s": fit_seconds, "infer_s_per_image": per_image,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "memory_bank": int(model.memory_bank.shape[0])}))


if __name__ == "__main__":
    main()
