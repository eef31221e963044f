"""A run's learning curves as a PNG: what the notebook's view shows while a run trains and after it ends
(nbtrain.jupyter.view). Plain matplotlib, no IPython, so it is drawn the same anywhere."""

from __future__ import annotations

import io

MARKED_EPOCHS = 30  # up to this many epochs each one is a dot too: one epoch alone is a dot, not an empty plot


def curves_figure(history, best_epoch: int, monitor: str):
    """Train/validation loss (and the monitored metric when it is not the loss), best epoch marked: a
    matplotlib Figure (not pyplot's, so the notebook's backend is left alone)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    metric = monitor != "val_loss" and monitor in history
    epochs = history["epoch"]
    dots = {"marker": "o", "markersize": 3} if len(epochs) <= MARKED_EPOCHS else {}
    figure = Figure(figsize=(9 if metric else 5, 3.2), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2 if metric else 1, squeeze=False)[0]
    axes[0].plot(epochs, history["train_loss"], label="train loss", **dots)
    axes[0].plot(epochs, history["val_loss"], label="validation loss", **dots)
    panels = [(axes[0], "loss")] + ([(axes[1], monitor)] if metric else [])
    if metric:
        axes[1].plot(epochs, history[monitor], color="tab:green", label=monitor, **dots)
    for ax, title in panels:
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch"), ax.set_title(title), ax.legend(fontsize=8)
        if len(epochs) == 1:  # matplotlib's margins around one point are a fraction of an epoch wide
            ax.set_xlim(epochs.iloc[0] - 1, epochs.iloc[0] + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5 on a short run
    return figure


def curves_png(history, best_epoch: int, monitor: str) -> bytes:
    """curves_figure as PNG bytes."""
    buffer = io.BytesIO()
    curves_figure(history, best_epoch, monitor).savefig(buffer, format="png")
    return buffer.getvalue()
