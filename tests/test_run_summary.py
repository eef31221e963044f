"""How a finished run reads in a notebook and a terminal: the history table and the summary lines."""

import re

from conftest import make_frame

import nbtrain as nt


def test_a_long_history_marks_the_epochs_it_leaves_out_and_throughput_is_said_once(workdir, one_thread):
    pipe = nt.Pipeline(make_frame(300), target="label", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    run = pipe.fit(epochs=20, patience=None, batch_size=64, view=None)
    shown = repr(run)
    history = shown.split("History (best epoch marked *):", 1)[1]
    labels = [line.split()[0].rstrip("*") for line in history.strip().splitlines()
              if re.match(r"\s*(\d+\*?|…)\s", line)]
    # epochs 1-3, then a row saying how many are left out, the best epoch, the gaps around it, the last 8
    assert labels[:4] == ["1", "2", "3", "…"] and labels[-8:] == [str(e) for e in range(13, 21)]
    gaps = re.findall(r"… (\d+) epochs?", history)
    assert gaps and sum(map(int, gaps)) + 3 + 8 + (1 if 3 < run.best_epoch < 13 else 0) == 20
    assert shown.count("samples/s") == 1 and "Where the training time went:" in shown
    assert "<td>…</td>" in run._repr_html_()
