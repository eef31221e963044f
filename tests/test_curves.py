"""The learning curves the notebook's view draws (nbtrain.training.curves)."""

import io

import matplotlib.image
import pandas as pd

from nbtrain.training.curves import curves_figure, curves_png


def history(epochs: int, **extra) -> pd.DataFrame:
    losses = [1.0 / (e + 1) for e in range(epochs)]
    return pd.DataFrame({"epoch": range(1, epochs + 1), "train_loss": losses, "val_loss": [v + 0.1 for v in losses],
                         **{k: v[:epochs] for k, v in extra.items()}})


def test_the_first_epoch_is_drawn_as_a_point_on_whole_epochs():
    # the live view draws after the first epoch: a line through one point is invisible
    axes = curves_figure(history(1), best_epoch=1, monitor="val_loss").axes[0]
    curves = [line for line in axes.get_lines() if line.get_label() in ("train loss", "validation loss")]
    assert len(curves) == 2 and all(line.get_marker() == "o" for line in curves)
    low, high = axes.get_xlim()
    assert low < 1 < high and high - low >= 2
    assert all(float(tick).is_integer() for tick in axes.get_xticks())


def test_a_long_run_is_lines_and_a_monitored_metric_gets_its_own_panel():
    figure = curves_figure(history(60, val_f1=[0.5] * 60), best_epoch=42, monitor="val_f1")
    loss, metric = figure.axes
    assert [line.get_marker() for line in loss.get_lines()[:2]] == ["None", "None"]
    assert metric.get_title() == "val_f1" and "best epoch 42" in [line.get_label() for line in metric.get_lines()]
    image = matplotlib.image.imread(io.BytesIO(curves_png(history(60, val_f1=[0.5] * 60), 42, "val_f1")), "png")
    assert image.shape[:2] == (320, 900)
