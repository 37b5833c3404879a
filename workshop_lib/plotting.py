"""Figures for the notebooks and the CLI. Every function takes Predictions or a results table and returns a
matplotlib Figure; nothing here recomputes a score."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "ipympl", "widget")):
    matplotlib.use("Agg")  # scripts and CI have no display; notebooks keep their inline backend

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FormatStrFormatter, NullLocator
from PIL import Image
from torchvision.transforms import v2 as T

from .data.layouts import discover_records, list_categories
from .data.transforms import to_rgb
from .predictions import Predictions

NORMAL_COLOR, ANOMALY_COLOR, THRESHOLD_COLOR = "tab:blue", "tab:red", "black"


def load_display_image(path: str, size: tuple[int, int], resize: int | None = None) -> np.ndarray:
    """The test image as the model saw it (shorter side resized, centre-cropped), as an RGB array."""
    with Image.open(path) as image:
        image = to_rgb(image)
        image = T.Resize(resize or max(size))(image)
        return np.asarray(T.CenterCrop(size)(image))


def score_histogram(normal: np.ndarray, anomalous: np.ndarray, threshold: float | None, title: str,
                    xlabel: str, ax: plt.Axes | None = None, bins: int = 50) -> plt.Axes:
    """Overlaid density histograms of normal vs anomalous scores, with the threshold as a vertical line."""
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    edges = np.histogram_bin_edges(np.concatenate([normal, anomalous]), bins=bins)
    ax.hist(normal, bins=edges, alpha=0.6, density=True, color=NORMAL_COLOR, label=f"normal (n={len(normal)})")
    ax.hist(anomalous, bins=edges, alpha=0.6, density=True, color=ANOMALY_COLOR,
            label=f"anomalous (n={len(anomalous)})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color=THRESHOLD_COLOR, linestyle="--", label=f"F1-optimal threshold {threshold:.3g}")
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    ax.legend()
    return ax


def plot_score_histograms(predictions: Predictions, max_pixels: int = 2_000_000, seed: int = 0) -> plt.Figure:
    """Pixel-wise and image-wise score histograms (normal vs anomalous) with their F1-optimal thresholds and, where
    the model has them, the thresholds from normal images (dotted)."""
    fig, (pixel_ax, image_ax) = plt.subplots(1, 2, figsize=(13, 4.5))
    valid = np.ones(predictions.masks.shape, bool) if predictions.valid is None else predictions.valid
    maps, masks = predictions.anomaly_maps[valid], predictions.masks[valid]
    if maps.size > max_pixels:  # a random subset keeps the histogram's shape and the plot fast
        keep = np.random.default_rng(seed).choice(maps.size, max_pixels, replace=False)
        maps, masks = maps[keep], masks[keep]
    score_histogram(maps[~masks], maps[masks], predictions.pixel_threshold,
                    f"{predictions.category}: pixel-wise scores", "anomaly map value", pixel_ax)
    labels = predictions.labels.astype(bool)
    score_histogram(predictions.image_scores[~labels], predictions.image_scores[labels],
                    predictions.image_threshold, f"{predictions.category}: image-wise scores", "image score",
                    image_ax, bins=20)
    normal_thresholds = ((pixel_ax, predictions.normal_pixel_threshold), (image_ax, predictions.normal_image_threshold))
    for ax, threshold in normal_thresholds:
        if np.isfinite(threshold):
            ax.axvline(threshold, color=THRESHOLD_COLOR, linestyle=":", label=f"from normal images {threshold:.3g}")
            ax.legend()
    fig.tight_layout()
    return fig


def plot_examples(predictions: Predictions, indices: Sequence[int], threshold: float | None = None,
                  resize: int | None = None) -> plt.Figure:
    """One row per example: image | anomaly map | binarised map (at ``threshold``) | ground-truth mask."""
    threshold = predictions.pixel_threshold if threshold is None else threshold
    vmin, vmax = float(predictions.anomaly_maps.min()), float(predictions.anomaly_maps.max())
    fig, axes = plt.subplots(len(indices), 4, figsize=(12, 3 * len(indices)), squeeze=False)
    for row, index in zip(axes, indices, strict=True):
        size = predictions.anomaly_maps[index].shape
        row[0].imshow(load_display_image(str(predictions.paths[index]), size, resize))
        row[0].set_title(f"{Path(str(predictions.paths[index])).name} ({predictions.defect_types[index]})\n"
                         f"score {predictions.image_scores[index]:.3g}", fontsize=9)
        shown = row[1].imshow(predictions.anomaly_maps[index], cmap="jet", vmin=vmin, vmax=vmax)
        fig.colorbar(shown, ax=row[1], fraction=0.046)
        row[1].set_title("anomaly map", fontsize=9)
        row[2].imshow(predictions.anomaly_maps[index] >= threshold, cmap="gray", vmin=0, vmax=1)
        row[2].set_title(f"map >= {threshold:.3g}", fontsize=9)
        row[3].imshow(predictions.masks[index], cmap="gray", vmin=0, vmax=1)
        row[3].set_title("ground truth", fontsize=9)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    return fig


def save_example_grids(predictions: Predictions, folder: str | Path, per_figure: int = 4) -> list[Path]:
    """All test images as PNG grids of ``per_figure`` rows (the CLI's --save_segmentation_images)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for start in range(0, len(predictions), per_figure):
        fig = plot_examples(predictions, list(range(start, min(start + per_figure, len(predictions)))))
        path = folder / f"examples_{start:04d}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def plot_category_metrics(results: pd.DataFrame, metrics: Sequence[str] = ("instance_auroc", "full_pixel_auroc"),
                          title: str = "") -> plt.Figure:
    """Grouped bars of metrics per category from a results.csv table (the Mean row is drawn as a line)."""
    table = results.drop(index="Mean", errors="ignore")[list(metrics)]
    long = table.reset_index(names="category").melt(id_vars="category", var_name="metric", value_name="value")
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(table) + 3), 4.5))
    sns.barplot(long, x="category", y="value", hue="metric", ax=ax)
    for metric, color in zip(metrics, sns.color_palette(), strict=False):
        ax.axhline(table[metric].mean(), color=color, linestyle=":", linewidth=1)
    low = max(0.0, float(np.nanmin(table.values)) - 0.05)
    ax.set(ylim=(low, 1.0), title=title or "metrics per category", ylabel="score", xlabel="")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def plot_score_distributions(predictions: Sequence[Predictions], normalize: bool = True) -> plt.Figure:
    """Image-score distributions per category (normal vs anomalous), side by side."""
    frames = []
    for pred in predictions:
        pred = pred.normalized() if normalize else pred
        frames.append(pd.DataFrame({"category": pred.category, "score": pred.image_scores,
                                    "label": np.where(pred.labels == 1, "anomalous", "normal")}))
    data = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(predictions) + 3), 4.5))
    sns.violinplot(data, x="category", y="score", hue="label", split=True, inner="quart", cut=0,
                   palette={"normal": NORMAL_COLOR, "anomalous": ANOMALY_COLOR}, ax=ax)
    ax.set(ylabel="image score" + (" (min-max per category)" if normalize else ""), xlabel="")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def plot_metric_curve(table: pd.DataFrame, x: str, metrics: Sequence[str], hue: str | None = None,
                      title: str = "") -> plt.Figure:
    """Metric(s) vs a parameter (image size, shots...), mean +- std over repeated rows (seeds)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        sns.lineplot(table, x=x, y=metric, hue=hue, marker="o", errorbar="sd", ax=ax)
        ax.set(title=metric, xlabel=x, ylabel=metric)
        if pd.api.types.is_integer_dtype(table[x]) and table[x].nunique() <= 12:
            ax.set_xticks(sorted(table[x].unique()))  # shots, image sizes: no ticks between the measured values
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_classwise_bars(table: pd.DataFrame, metric: str, label: str = "category", n_worst: int = 3,
                        title: str = "") -> plt.Figure:
    """Bars of ``metric`` per class, sorted, the ``n_worst`` classes in red."""
    ordered = table.sort_values(metric)
    colors = [ANOMALY_COLOR if i < n_worst else "tab:gray" for i in range(len(ordered))]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(ordered) + 3), 4.5))
    ax.bar(ordered[label].astype(str), ordered[metric], color=colors)
    ax.set(ylabel=metric, title=title or f"{metric} per class ({n_worst} worst in red)",
           ylim=(max(0.0, float(ordered[metric].min()) - 0.05), 1.0))
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def plot_fewshot_decay(table: pd.DataFrame, metric: str = "instance_auroc", x: str = "shots", log_x: bool = True,
                       title: str = "") -> plt.Figure:
    """A few-shot study's table (studies.fewshot.collect): ``metric`` vs ``x`` (shots or tier), one panel per
    domain, one line per method, mean +- std over seeds, so methods compare at equal training data."""
    domains = list(dict.fromkeys(table["domain"]))
    columns = min(3, len(domains))
    rows = -(-len(domains) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.8 * rows), squeeze=False, sharey=True)
    for ax, domain in zip(axes.flat, domains, strict=False):  # spare panels stay empty
        sns.lineplot(table[table["domain"] == domain], x=x, y=metric, hue="method", marker="o", errorbar="sd", ax=ax)
        ax.set(title=domain, xlabel=x, ylabel=metric, xscale="log" if log_x else "linear")
        ax.set_xticks(sorted(table[x].unique()))  # the measured values, written out (no 3 x 10^0 on a log axis)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_locator(NullLocator())
        if table[metric].max() <= 1:  # AUROC / AUPRO: the +- std band may not pass 1
            ax.set_ylim(top=1.02)
    for ax in axes.flat[len(domains):]:
        ax.axis("off")
    fig.suptitle(title or f"{metric} vs {x} (mean +- std over seeds)")
    fig.tight_layout()
    return fig


def plot_losses(curves: dict[str, Sequence[float]], ylabel: str = "loss", title: str = "",
                log_y: bool = False) -> plt.Figure:
    """Training loss per epoch, one line per run (e.g. per category), from the models' ``losses_``."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, marker="o" if len(losses) <= 50 else None, label=name)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title, yscale="log" if log_y else "linear")
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    return fig


def show_images(panels: Sequence[tuple], columns: int | None = None, title: str = "",
                size: float = 3.2) -> plt.Figure:
    """A grid of pictures: ``panels`` are (picture, title) or (picture, title, colormap) with pictures as arrays
    or tensors ((H, W) or (H, W, 3)); ``columns`` per row (default: all in one row)."""
    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for ax, (picture, label, *cmap) in zip(axes.flat, panels, strict=False):
        ax.imshow(np.asarray(picture.cpu() if hasattr(picture, "cpu") else picture), cmap=cmap[0] if cmap else None)
        ax.set_title(label, fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_calibrated_scores(predictions: Predictions, borderline: float) -> plt.Figure:
    """Raw image scores with the calibration's borderline beside the calibrated scores (0 to 1) with 0.5."""
    anomalous = predictions.labels.astype(bool)
    fig, (raw_ax, calibrated_ax) = plt.subplots(1, 2, figsize=(13, 4.5))
    score_histogram(predictions.image_scores[~anomalous], predictions.image_scores[anomalous], None,
                    f"{predictions.category}: raw image scores", "image score", raw_ax, bins=20)
    raw_ax.axvline(borderline, color=THRESHOLD_COLOR, linestyle="--", label="borderline")
    calibrated = predictions.calibrated_scores
    score_histogram(calibrated[~anomalous], calibrated[anomalous], None, f"{predictions.category}: calibrated scores",
                    "calibrated score", calibrated_ax, bins=np.linspace(0, 1, 21))
    calibrated_ax.axvline(0.5, color=THRESHOLD_COLOR, linestyle="--", label="borderline 0.5")
    for ax in (raw_ax, calibrated_ax):
        ax.legend()
    fig.tight_layout()
    return fig


def plot_dataset_examples(root: str | Path, layout: str = "mvtec",
                          categories: Sequence[str] | None = None) -> plt.Figure:
    """One row per category: a good test image, a defective one and its mask, as they are on disk."""
    panels = []
    for category in categories or list_categories(root, layout):
        records = discover_records(root, category, "test", layout)
        good = next(r for r in records if r.label == 0)
        bad = next(r for r in records if r.label == 1)
        with Image.open(good.path) as normal, Image.open(bad.path) as defective:
            panels += [(np.asarray(to_rgb(normal)), f"{category}: good"),
                       (np.asarray(to_rgb(defective)), f"{category}: {bad.defect_type}")]
        if bad.mask_path is None:
            panels.append((np.zeros((8, 8)), "no mask", "gray"))
        else:
            with Image.open(bad.mask_path) as mask:
                panels.append((np.asarray(mask.convert("L")), "mask", "gray"))
    return show_images(panels, columns=3, size=3.0)


def plot_leaderboard(table: pd.DataFrame, published: pd.DataFrame | None = None,
                     metric: str = "instance_auroc") -> plt.Figure:
    """Accuracy against fit time, one marker per method and category (the leaderboard's table), log time axis;
    ``published`` (method, metric columns) draws each paper's MVTec AD number as a dotted line in the method's
    colour."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    methods = sorted(table["method"].unique())
    palette = dict(zip(methods, sns.color_palette(n_colors=len(methods)), strict=True))
    sns.scatterplot(table, x="fit_seconds", y=metric, hue="method", hue_order=methods, palette=palette,
                    style="category", s=90, ax=ax)
    rows = [] if published is None else [r for r in published.itertuples()
                                         if r.method in palette and pd.notna(getattr(r, metric))]
    for position, row in enumerate(rows):  # labels side by side, so close numbers stay readable
        ax.axhline(getattr(row, metric), color=palette[row.method], linestyle=":", linewidth=1.2)
        ax.annotate(f"{row.method}, paper (MVTec AD)", (0.01 + 0.33 * position, getattr(row, metric)),
                    xycoords=("axes fraction", "data"), fontsize=7, color=palette[row.method], va="bottom")
    ax.set(xscale="log", xlabel="fit seconds (log)", ylabel=metric,
           title=f"{metric} against fit time ({table['preset'].iloc[0]} preset, {table['imagesize'].iloc[0]} px)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
