"""Text training throughput: nbtrain's fit against a hand-written loop, same MiniLM, data and steps.

Both fine-tune the same pretrained transformer (the offline all-MiniLM-L6-v2 by default) with a
one-logit head, from the same initial weights, on the same token ids, with the same recipe: AdamW
(lr 1e-4, weight decay 0.01), linear warmup over 10% of the steps then linear decay, gradients
clipped at norm 1, BCE with logits, and bf16 autocast on CUDA. The hand-written loop is the usual
transformers one: AutoModelForSequenceClassification, ids padded to --seq-len on the device, a
random permutation per epoch, get_linear_schedule_with_warmup.

Every synthetic text is longer than --seq-len tokens and cut there, so nbtrain's dynamic padding
gives every batch the same width as the fixed padding of the hand-written loop: the two do the
same arithmetic, and the ratio measures nbtrain's overhead (its doctor included) and nothing else.

Only ratios measured in one run mean anything (machines are shared); contenders alternate and the
median of the repeats is reported. Samples/s count training steps only (validation excluded).

    python benchmarks/bench_text.py                      # CPU: batch 16 x 64 tokens, 12 steps, < 2 min
    python benchmarks/bench_text.py --device cuda --batch-size 256 --seq-len 128 --steps 200
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

import nbtrain as nt
from nbtrain.kinds.text.models import default_model_path

WORDS = ("the snack was fresh and tasty but the box arrived late so I would buy it again only on sale "
         "coffee tea cookie fruit sweet salty crunchy bland stale delivery price flavor").split()
SPLIT = (0.8, 0.1, 0.1)


def make_pipeline(steps: int, batch: int, seq_len: int, workdir: str):
    """A binary text pipeline whose train split holds `steps` batches of texts longer than seq_len."""
    rng = np.random.default_rng(0)
    rows = math.ceil(steps * batch / SPLIT[0]) + 2
    texts = [" ".join(rng.choice(WORDS, size=seq_len + 8)) + f" {i}" for i in range(rows)]
    frame = pd.DataFrame({"text": texts, "label": rng.choice(["yes", "no"], size=rows)})
    pipe = nt.Pipeline(frame, target="label", kind="text", workdir=workdir)
    pipe.clean(), pipe.split(SPLIT)
    pipe.preprocess(max_length=seq_len)
    assert (pipe.train.lengths == seq_len).all(), "every text must fill seq_len for a like-for-like comparison"
    return pipe


def with_nbtrain(pipe, batch: int, device: str, doctor: bool = True) -> float:
    torch.manual_seed(0)
    run = pipe.fit(batch_size=batch, epochs=1, patience=None, lr=1e-4, device=device, view=None, doctor=doctor,
                   seed=0)
    return run.samples_per_s


def by_hand(pipe, batch: int, device: str) -> float:
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup
    from transformers.utils import logging
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(default_model_path(), num_labels=1,
                                                               local_files_only=True).to(device)
    ids = torch.as_tensor(pipe.train.ids, device=device)
    mask = torch.ones_like(ids)
    y = torch.as_tensor(pipe.train.y, device=device).float().view(-1, 1)
    steps = math.ceil(len(ids) / batch)
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-4)
    schedule = get_linear_schedule_with_warmup(optimizer, round(0.1 * steps), steps)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else _Nothing()
    model.train()
    _sync(device)
    start = time.perf_counter()
    for rows in torch.randperm(len(ids), device=device).split(batch):
        with autocast:
            logits = model(input_ids=ids[rows], attention_mask=mask[rows]).logits
            loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y[rows])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return len(ids) / (time.perf_counter() - start)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default 16 on the CPU, 256 on CUDA")
    parser.add_argument("--seq-len", type=int, default=None, help="default 64 on the CPU, 128 on CUDA")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run; default 12 CPU, 200 CUDA")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--doctor-off", action="store_true", help="also time nbtrain with doctor=False")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    batch = args.batch_size or (256 if gpu else 16)
    seq_len = args.seq_len or (128 if gpu else 64)
    steps = args.steps or (200 if gpu else 12)
    contenders = {"nbtrain fit": with_nbtrain, "hand-written loop": by_hand}
    if args.doctor_off:
        contenders["nbtrain fit, doctor off"] = lambda p, b, d: with_nbtrain(p, b, d, doctor=False)
    results: dict = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as workdir:
        pipe = make_pipeline(steps, batch, seq_len, workdir)
        print(f"all-MiniLM-L6-v2, {len(pipe.train)} train texts x {seq_len} tokens, batch {batch}, "
              f"{math.ceil(len(pipe.train) / batch)} steps, {args.device}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {args.repeats} repeats")
        for _ in range(args.repeats):
            for name, train in contenders.items():
                results[name].append(train(pipe, batch, args.device))
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"{name:>26}: {value:10,.1f} samples/s  (runs: {', '.join(f'{v:,.1f}' for v in results[name])})")
    print(f"nbtrain / hand-written loop: {medians['nbtrain fit'] / medians['hand-written loop']:.2f}x")


if __name__ == "__main__":
    main()
