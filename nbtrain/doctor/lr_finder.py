"""The learning-rate finder (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"; fastai's lr_find).

On a deep copy of the model, the lr grows exponentially from `start_lr` to `end_lr` over `steps`
optimizer steps on train batches; validation and test rows are never touched, and the caller's
model, the pipeline and torch's global random state are left as they were. Each step's loss is
smoothed by an exponential moving average (beta 0.98, bias-corrected), and the sweep stops at
divergence: the smoothed loss above 4x its minimum, or a NaN/inf loss.

The suggested lr (the rule): the lr at the smoothed loss's minimum, divided by 10. At the minimum the
lr is already about as large as training tolerates; a tenth of it sits on the steep, stable descent
(fastai's "minimum/10"). The steepest descent (the most negative slope of the smoothed loss against
log10 lr) is reported beside it.

Kernel > Interrupt (SIGINT) ends the sweep after its current step and returns the report of the
lrs swept so far; a second one raises KeyboardInterrupt (nbtrain.training.interrupts).
"""

from __future__ import annotations

import base64
import copy
import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from nbtrain.doctor.fixes import format_value, train_line
from nbtrain.errors import ConfigError
from nbtrain.report import Report
from nbtrain.training import fit as training
from nbtrain.training.callbacks import RunState
from nbtrain.training.interrupts import GracefulInterrupt
from nbtrain.training.losses import check_output_activation, choose_loss
from nbtrain.training.optim import make_optimizer

BETA = 0.98          # smoothing of the loss curve
# lr_find's keywords (Pipeline.lr_find and autotune pick these out of fit's)
LR_FIND_OPTIONS = ("loss", "optimizer", "weight_decay", "batch_size", "start_lr", "end_lr", "steps", "device", "seed")
DIVERGED = 4.0       # the sweep stops when the smoothed loss exceeds this multiple of its minimum


@dataclass(repr=False)
class LRFinderReport(Report):
    title = "Learning-rate finder"
    lrs: list = field(default_factory=list)
    losses: list = field(default_factory=list)       # raw train loss at each step
    smoothed: list = field(default_factory=list)
    suggested_lr: float = math.nan                    # the rule: lr at the minimum / 10
    min_lr: float = math.nan                          # lr where the smoothed loss is lowest
    steepest_lr: float = math.nan                     # lr of the steepest descent
    stop_reason: str = ""                             # "diverged", "non_finite_loss", "end_lr" or "interrupted"
    rule: str = "the lr at the smoothed loss's minimum, divided by 10"
    line: str = ""                                    # the %%train line that uses the suggestion
    warnings: list = field(default_factory=list)

    def _summary(self) -> list[str]:
        if not self.smoothed:
            return ["The sweep stopped at its first step: the loss was not finite."]
        ended = {"diverged": f"the loss diverged at lr {format_value(self.lrs[-1])}",
                 "non_finite_loss": f"the loss turned NaN/inf after lr {format_value(self.lrs[-1])}",
                 "end_lr": "it reached end_lr without diverging",
                 "interrupted": f"it was interrupted at lr {format_value(self.lrs[-1])}"}[self.stop_reason]
        return [f"Swept the lr from {format_value(self.lrs[0])} over {len(self.lrs)} steps on a copy of the model "
                f"(train rows only); {ended}.",
                f"Smoothed loss lowest at lr {format_value(self.min_lr)}; steepest descent at lr "
                f"{format_value(self.steepest_lr)}.",
                f"Suggested lr: {format_value(self.suggested_lr)} ({self.rule}). To use it: {self.line}"]

    def _sections(self):
        import pandas as pd
        if not self.smoothed:
            return []
        picks = sorted(set(np.linspace(0, len(self.lrs) - 1, 8).round().astype(int).tolist()))
        table = pd.DataFrame({"lr": [format_value(self.lrs[i]) for i in picks],
                              "smoothed loss": [round(self.smoothed[i], 4) for i in picks]}).set_index("lr")
        return [("The curve (a few points; plot() draws it all)", table)]

    def plot(self):
        """The smoothed (and raw) loss against the lr, log scale, the suggestion marked: a matplotlib Figure."""
        from matplotlib.figure import Figure  # no pyplot: leaves the notebook's backend alone
        figure = Figure(figsize=(5.5, 3.4), dpi=100, layout="constrained")
        ax = figure.subplots()
        ax.plot(self.lrs, self.losses, color="tab:blue", alpha=0.25, linewidth=1, label="loss")
        ax.plot(self.lrs, self.smoothed, color="tab:blue", label="smoothed loss")
        if math.isfinite(self.suggested_lr):
            ax.axvline(self.suggested_lr, color="tab:green", linestyle="--",
                       label=f"suggested {format_value(self.suggested_lr)}")
            ax.axvline(self.min_lr, color="grey", linestyle=":", label=f"minimum {format_value(self.min_lr)}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate"), ax.set_ylabel("train loss"), ax.set_title("Learning-rate finder")
        if self.smoothed:
            low, high = min(self.smoothed), self.smoothed[0]
            ax.set_ylim(low - 0.1 * abs(high - low), max(high, low) + 0.5 * abs(high - low) + 1e-12)
        ax.legend(fontsize=8)
        return figure

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.plot().savefig(buffer, format="png")
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        image = base64.b64encode(self._repr_png_()).decode("ascii")
        return super()._repr_html_()[:-len("</div>")] + f'<img src="data:image/png;base64,{image}"/></div>'


def lr_find(data: training.FitData, model=None, *, loss="auto", optimizer="adamw", weight_decay=1e-2,
            batch_size=256, start_lr=1e-7, end_lr=10.0, steps=200, device="auto", seed=None,
            given: dict | None = None, cell_text: str | None = None) -> LRFinderReport:
    """Sweep the lr on a copy of `model` (None: the default MLP fit would build) over data.train."""
    _check(start_lr, end_lr, steps, batch_size)
    seed = data.seed if seed is None else seed
    device = training.resolve_device(device)
    stop = RunState()  # set by the first SIGINT
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), GracefulInterrupt(stop):
        torch.manual_seed(seed)
        twin = copy.deepcopy(model) if model is not None else None  # the caller's model stays untouched
        twin = training._build_model(twin, data, None).to(device)
        scale = training.target_scale(data.task, data.train.y)
        train = data.train.batches(device, scale)
        training.check_forward(twin, train, data.n_outputs, data.task)
        loss_fn, _ = choose_loss(data.task, loss, data.train.y, data.n_outputs)
        check_output_activation(twin, loss_fn, data.task)
        opt = make_optimizer(twin, optimizer, start_lr, weight_decay)
        generator = torch.Generator(device=device).manual_seed(seed)
        report = _sweep(twin, loss_fn.to(device), opt, train, batch_size, (start_lr, end_lr, steps), generator, stop)
    _suggest(report)
    if math.isfinite(report.suggested_lr):
        report.line = train_line({"lr": report.suggested_lr}, given, cell_text)
    return report


def _check(start_lr, end_lr, steps, batch_size) -> None:
    if not (isinstance(start_lr, (int, float)) and isinstance(end_lr, (int, float)) and 0 < start_lr < end_lr):
        raise ConfigError(f"lr_find needs 0 < start_lr < end_lr; received start_lr={start_lr!r}, end_lr={end_lr!r}.")
    for name, value, low in (("steps", steps, 10), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be a whole number >= {low}; received {value!r}.")


def _sweep(model, loss_fn, opt, train, batch_size: int, plan: tuple, generator, stop: RunState) -> LRFinderReport:
    start_lr, end_lr, steps = plan
    gamma = (end_lr / start_lr) ** (1 / (steps - 1))
    report, average, lowest = LRFinderReport(stop_reason="end_lr"), 0.0, math.inf
    batch_size = min(batch_size, max(2, len(train) // 2))  # at least two batches, and never a batch of one
    pending = iter(())
    model.train()
    for i in range(steps):
        rows = next(pending, None)
        if rows is None or len(rows) < 2:
            pending = iter(torch.randperm(len(train), device=train.device, generator=generator).split(batch_size))
            rows = next(pending)
        lr = start_lr * gamma ** i
        for group in opt.param_groups:
            group["lr"] = lr
        inputs, y = train.take(rows)
        loss = loss_fn(model(*inputs), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()  # the finder reads every loss: a short sweep, not a training run
        if not math.isfinite(value):
            report.stop_reason = "non_finite_loss"
            break
        average = BETA * average + (1 - BETA) * value
        smooth = average / (1 - BETA ** (i + 1))
        report.lrs.append(lr), report.losses.append(value), report.smoothed.append(smooth)
        lowest = min(lowest, smooth)
        if i >= 10 and smooth > DIVERGED * lowest:
            report.stop_reason = "diverged"
            break
        if stop.stop:
            report.stop_reason = "interrupted"
            break
    return report


def _suggest(report: LRFinderReport) -> None:
    """Apply the documented rule, and find the steepest descent before the minimum."""
    if len(report.smoothed) < 5:
        report.warnings.append(f"The sweep was interrupted after {len(report.smoothed)} steps, too few to suggest an lr."
                               if report.stop_reason == "interrupted" else
                               "The loss diverged within the first steps: lower start_lr (e.g. start_lr=1e-9).")
        return
    smoothed, lrs = np.asarray(report.smoothed), np.asarray(report.lrs)
    lowest = int(np.argmin(smoothed))
    report.min_lr, report.suggested_lr = float(lrs[lowest]), float(lrs[lowest] / 10)
    skip = max(1, len(smoothed) // 10)  # the average's first points still lean on few losses
    if lowest - skip >= 2:
        slopes = np.gradient(smoothed[skip:lowest + 1], np.log10(lrs[skip:lowest + 1]))
        report.steepest_lr = float(lrs[skip + int(np.argmin(slopes))])
    if report.stop_reason == "interrupted":
        report.warnings.append(f"The sweep was interrupted at lr {format_value(report.lrs[-1])}: the suggestion rests "
                               "on the lrs swept so far; sweep again to the end before trusting it.")
    elif report.stop_reason == "end_lr" and lowest >= len(smoothed) - 3:
        report.warnings.append(f"The loss was still falling at end_lr={format_value(report.lrs[-1])}: sweep further "
                               "(a larger end_lr) before trusting the suggestion.")
