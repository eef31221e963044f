"""A run's learning curves as a PNG: what the notebook's view shows while a run trains and after it ends
(nbtrain.jupyter.view). Plain matplotlib, no IPython, so it is drawn the same anywhere."""

from __future__ import annotations

import io


def curves_png(history, best_epoch: int, monitor: str) -> bytes:
    """Train/validation loss (and the monitored metric when it is not the loss), best epoch marked."""
    from matplotlib.figure import Figure  # no pyplot: leaves the notebook's backend alone
    from matplotlib.ticker import MaxNLocator
    metric = monitor != "val_loss" and monitor in history
    figure = Figure(figsize=(9 if metric else 5, 3.2), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2 if metric else 1, squeeze=False)[0]
    axes[0].plot(history["epoch"], history["train_loss"], label="train loss")
    axes[0].plot(history["epoch"], history["val_loss"], label="validation loss")
    panels = [(axes[0], "loss")] + ([(axes[1], monitor)] if metric else [])
    if metric:
        axes[1].plot(history["epoch"], history[monitor], color="tab:green", label=monitor)
    for ax, title in panels:
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch"), ax.set_title(title), ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5 on a short run
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
