"""Interactive notebook tools (ipywidgets): a dataset browser and a threshold explorer."""

from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from PIL import Image

from .data.layouts import discover_records, list_categories
from .predictions import Predictions


def pixel_precision_recall(predictions: Predictions, threshold: float) -> tuple[float, float]:
    """Pixel-level precision and recall of ``map >= threshold`` against the masks."""
    predicted = predictions.anomaly_maps >= threshold
    true_positive = np.logical_and(predicted, predictions.masks).sum()
    precision = true_positive / max(predicted.sum(), 1)
    recall = true_positive / max(predictions.masks.sum(), 1)
    return float(precision), float(recall)


def browse_dataset(root: str | Path, layout: str = "mvtec") -> widgets.Widget:
    """Pick a category, split and image; see the image and its mask."""
    categories = list_categories(root, layout)
    category = widgets.Dropdown(options=categories, description="category")
    split = widgets.ToggleButtons(options=["train", "test"], description="split")
    index = widgets.IntSlider(min=0, max=0, description="image")
    output = widgets.Output()

    def records():
        return discover_records(root, category.value, split.value, layout)

    def show(*_):
        found = records()
        index.max = len(found) - 1
        record = found[min(index.value, index.max)]
        with output:
            output.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(8, 4))
            axes[0].imshow(Image.open(record.path).convert("RGB"))
            axes[0].set_title(f"{record.defect_type}: {record.path.name}")
            mask = Image.open(record.mask_path) if record.mask_path else np.zeros((8, 8))
            axes[1].imshow(mask, cmap="gray", vmin=0, vmax=255 if record.mask_path else 1)
            axes[1].set_title("ground-truth mask")
            for ax in axes:
                ax.axis("off")
            plt.show()

    for control in (category, split, index):
        control.observe(show, names="value")
    show()
    box = widgets.VBox([widgets.HBox([category, split]), index, output])
    display(box)
    return box


def explore_threshold(predictions: Predictions, n_examples: int = 3) -> widgets.Widget:
    """A slider over the pixel threshold: binarised maps of anomalous examples and pixel precision/recall."""
    low, high = float(predictions.anomaly_maps.min()), float(predictions.anomaly_maps.max())
    slider = widgets.FloatSlider(value=predictions.pixel_threshold, min=low, max=high, step=(high - low) / 200,
                                 description="threshold", readout_format=".4g", continuous_update=False,
                                 layout=widgets.Layout(width="600px"))
    output = widgets.Output()
    examples = np.flatnonzero(predictions.labels == 1)[:n_examples]

    def show(*_):
        precision, recall = pixel_precision_recall(predictions, slider.value)
        with output:
            output.clear_output(wait=True)
            fig, axes = plt.subplots(2, len(examples), figsize=(3 * len(examples), 6), squeeze=False)
            for column, index in enumerate(examples):
                axes[0, column].imshow(predictions.anomaly_maps[index] >= slider.value, cmap="gray")
                axes[0, column].set_title(f"map >= {slider.value:.3g}")
                axes[1, column].imshow(predictions.masks[index], cmap="gray")
                axes[1, column].set_title("ground truth")
            for ax in axes.ravel():
                ax.axis("off")
            fig.suptitle(f"pixel precision {precision:.3f}, recall {recall:.3f}")
            plt.show()

    slider.observe(show, names="value")
    show()
    box = widgets.VBox([slider, output])
    display(box)
    return box
