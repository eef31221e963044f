"""Losses: the choice by task, a weighted loss that keeps probabilities calibrated, and the user's own torch loss."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from torch import nn
from torch.nn import functional as F

import nbtrain as nt
from nbtrain.errors import ConfigError
from nbtrain.training.losses import BinaryLoss, RegressionLoss, TorchLoss, choose_loss

QUIET = {"view": None, "doctor": False, "epochs": 3, "patience": None}


def ready(df, target, workdir):
    pipe = nt.Pipeline(df, target=target, workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    return pipe


def test_loss_by_task_says_why():
    balanced = np.array([0, 1] * 50)
    rare = np.array([1] * 10 + [0] * 90)
    loss, why = choose_loss("binary", "auto", balanced, 1)
    assert isinstance(loss, BinaryLoss) and loss.pos_weight is None and "50.0% positive" in why
    loss, why = choose_loss("binary", "auto", rare, 1)  # rare positives: still plain BCE, calibrated
    assert loss.pos_weight is None and "10.0% positive in train" in why and "calibrated" in why
    loss, why = choose_loss("binary", "weighted_bce", rare, 1)
    assert loss.pos_weight.item() == pytest.approx(9.0) and "positives are 10.0% of train" in why
    assert "logits + log(9.00)" in why
    loss, why = choose_loss("binary", "focal", rare, 1)
    assert loss.focal_gamma == 2.0 and "not calibrated" in why
    loss, why = choose_loss("multiclass", "weighted_cross_entropy", np.array([0] * 8 + [1] * 2), 2)
    assert loss.loss.weight.tolist() == pytest.approx([10 / 16, 10 / 4])
    assert loss.offset.tolist() == pytest.approx(np.log([10 / 16, 10 / 4]).tolist())
    assert isinstance(choose_loss("regression", "huber", np.zeros(3), 1)[0], RegressionLoss)
    with pytest.raises(ConfigError, match=r"loss='mse' does not fit a binary task"):
        choose_loss("binary", "mse", balanced, 1)


def test_focal_loss_matches_its_formula():
    logits, target = torch.tensor([[2.0], [-1.0]]), torch.tensor([1, 1])
    p = torch.sigmoid(logits).view(-1)
    expected = (0.25 * (1 - p) ** 2 * -torch.log(p)).mean()
    assert BinaryLoss(focal_gamma=2.0)(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def _constant_minimiser(loss_fn, target, steps=400):
    """The single logit that minimises `loss_fn` over these targets: what a model without features learns."""
    logit = torch.zeros(1, 1, requires_grad=True)
    optimizer = torch.optim.LBFGS([logit], max_iter=steps)

    def closure():
        optimizer.zero_grad()
        value = loss_fn(logit.expand(len(target), 1), target)
        value.backward()
        return value
    optimizer.step(closure)
    return float(torch.sigmoid(logit.detach()))


def test_a_weighted_bce_still_gives_calibrated_probabilities():
    target = torch.tensor([1] * 10 + [0] * 90)
    weight = 9.0
    plain_weighted = lambda out, y: F.binary_cross_entropy_with_logits(  # noqa: E731 - the textbook weighted BCE
        out, y.float().view_as(out), pos_weight=torch.tensor([weight]))
    assert _constant_minimiser(plain_weighted, target) == pytest.approx(0.5, abs=1e-3)  # p * w / (p * w + 1 - p)
    assert _constant_minimiser(BinaryLoss(pos_weight=weight), target) == pytest.approx(0.1, abs=1e-3)
    users = TorchLoss(nn.BCEWithLogitsLoss(pos_weight=torch.tensor([weight])))
    assert _constant_minimiser(users, target) == pytest.approx(0.1, abs=1e-3)
    logits = torch.randn(7, 1)
    y = torch.tensor([1, 0, 0, 1, 0, 0, 0])
    assert users(logits, y) == BinaryLoss(pos_weight=weight)(logits, y)


def _frames():
    cancer = load_breast_cancer(as_frame=True).frame  # 569 tumours, 37% malignant (target 0)
    penguins = __import__("palmerpenguins").load_penguins()
    diabetes = load_diabetes(as_frame=True).frame  # 442 patients, disease progression after a year
    return {"binary": (cancer, "target"), "multiclass": (penguins, "species"), "regression": (diabetes, "target")}


@pytest.mark.parametrize("task, torch_loss, name", [
    ("binary", nn.BCEWithLogitsLoss(), "bce"),
    ("multiclass", nn.CrossEntropyLoss(), "cross_entropy"),
    ("regression", nn.MSELoss(), "mse"),
    ("regression", nn.L1Loss(), "mae"),
    ("regression", nn.HuberLoss(), "huber"),
])
def test_a_torch_loss_trains_exactly_like_the_named_loss(workdir, one_thread, task, torch_loss, name):
    df, target = _frames()[task]
    pipe = ready(df, target, workdir)
    assert pipe.task == task
    named = pipe.fit(loss=name, **QUIET)
    users = pipe.fit(loss=torch_loss, **QUIET)
    assert users.config["loss_reason"].startswith(f"your {type(torch_loss).__name__}, with targets shaped like")
    for column in ("train_loss", "val_loss"):
        assert users.history[column].tolist() == named.history[column].tolist(), column
    for mine, theirs in zip(users.model.parameters(), named.model.parameters()):
        assert torch.equal(mine, theirs)


def test_a_users_weighted_bce_equals_the_named_one(workdir, one_thread):
    df, target = _frames()["binary"]
    pipe = ready(df, target, workdir)
    positives = float(np.mean(pipe.train.y == 1))
    named = pipe.fit(loss="weighted_bce", **QUIET)
    users = pipe.fit(loss=nn.BCEWithLogitsLoss(pos_weight=torch.tensor([(1 - positives) / positives])), **QUIET)
    assert users.history["val_loss"].tolist() == pytest.approx(named.history["val_loss"].tolist(), rel=1e-6)
    assert "logits + log(weight)" in users.config["loss_reason"]


@pytest.mark.parametrize("task, loss, message", [
    ("binary", nn.CrossEntropyLoss(), r"CrossEntropyLoss needs one output per class and a class index per row, but "
                                      r"this binary task's model has 1 output per row.*Use nn.BCEWithLogitsLoss\(\)"),
    ("multiclass", nn.BCEWithLogitsLoss(), r"BCEWithLogitsLoss compares each output with a target of the same shape, "
                                           r"but this multiclass task's targets are one class index per row \(its "
                                           r"model has 3 outputs per row\). Use nn.CrossEntropyLoss\(\)"),
    ("multiclass", nn.MSELoss(), r"MSELoss compares each output with a target of the same shape"),
    ("regression", nn.CrossEntropyLoss(), r"CrossEntropyLoss needs one output per class.*Use nn.MSELoss\(\)"),
    ("binary", nn.BCELoss(), r"nn.BCELoss reads probabilities, but nbtrain reads a classifier's outputs as logits"),
])
def test_a_torch_loss_that_cannot_work_is_refused_before_training(workdir, task, loss, message):
    df, target = _frames()[task]
    pipe = ready(df, target, workdir)
    with pytest.raises(ConfigError, match=message):
        pipe.fit(loss=loss, **QUIET)
    assert pipe.runs.empty  # nothing trained, nothing logged


def test_a_shape_mismatch_left_over_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"MSELoss compares each output with a target of the same shape, but the "
                                          r"model's output has shape \(4, 3\) and the targets \(4,\)"):
        TorchLoss(nn.MSELoss())(torch.zeros(4, 3), torch.zeros(4))
    forecast = TorchLoss(nn.L1Loss())(torch.ones(4, 6), torch.zeros(4, 6))  # a horizon of 6 steps: same shape
    assert forecast.item() == 1.0
    assert not math.isnan(TorchLoss(nn.HuberLoss())(torch.ones(5, 1), torch.zeros(5)).item())


def test_a_loss_of_the_users_own_class_gets_the_targets_as_the_data_gives_them(workdir):
    seen = {}

    class MyLoss(nn.Module):
        def forward(self, output, target):
            seen.setdefault("shapes", (tuple(output.shape), tuple(target.shape), target.dtype))
            return F.mse_loss(output.view(-1), target)

    df, target = _frames()["regression"]
    pipe = ready(df, target, workdir)
    run = pipe.fit(loss=MyLoss(), **{**QUIET, "epochs": 1})
    assert seen["shapes"][1:] == ((seen["shapes"][0][0],), torch.float32)
    assert run.config["loss_reason"] == "your MyLoss"
