"""clean + split + preprocess on a large mixed table, against a plain scikit-learn ColumnTransformer.

Prints the time and the peak memory of each, and their ratios, from one run. The machines here are
shared and noisy, so only the ratios (nbtrain / reference, measured in the same run) mean anything.
Each contender runs in its own fresh process that loads the same pickled DataFrame, so one's memory
does not count against the other's; repeats alternate the two and the medians are reported.

Targets (issue 2): time <= 1.5x the reference; peak memory <= 3x the DataFrame's size;
fingerprinting 1M rows in seconds.

    python benchmarks/bench_data.py                 # 1,000,000 rows x 50 columns
    python benchmarks/bench_data.py --rows 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_NUMERIC, N_LOW, N_HIGH = 25, 20, 5  # 50 feature columns: numbers, labels to one-hot, labels to embed


def make_table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns = {f"num{i}": rng.normal(i, 1 + i % 3, size=rows) for i in range(N_NUMERIC)}
    for i in range(N_NUMERIC):
        if i % 5 == 0:  # some gaps, as real tables have
            columns[f"num{i}"][rng.random(rows) < 0.02 * (1 + i % 3)] = np.nan
    columns |= {f"low{i}": rng.choice([f"l{j}" for j in range(3 + i % 10)], size=rows) for i in range(N_LOW)}
    columns |= {f"high{i}": rng.choice([f"h{j}" for j in range(500)], size=rows) for i in range(N_HIGH)}
    frame = pd.DataFrame(columns)
    score = frame["num1"] - frame["num2"] + (frame["low0"] == "l1") + rng.normal(size=rows)
    frame["target"] = np.where(score > score.median(), "yes", "no")
    return frame


def reference(frame: pd.DataFrame) -> tuple:
    """What a careful user writes by hand: one ColumnTransformer, fitted and applied to every row."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
    numeric = [c for c in frame if c.startswith("num")]
    low = [c for c in frame if c.startswith("low")]
    high = [c for c in frame if c.startswith("high")]
    transformer = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("low", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="ignore", sparse_output=False)), low),
        ("high", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), high),
    ], sparse_threshold=0.0)
    out = transformer.fit_transform(frame.drop(columns="target"))
    return out.shape


def nbtrain_pipeline(frame: pd.DataFrame) -> tuple:
    import nbtrain as nt
    with tempfile.TemporaryDirectory() as workdir:
        pipe = nt.Pipeline(frame, target="target", workdir=workdir)
        pipe.clean()
        pipe.split()
        pipe.preprocess()
        return pipe.train.X.shape, pipe.train.codes.shape, pipe.val.X.shape


def fingerprint_only(frame: pd.DataFrame) -> tuple:
    from nbtrain.data import fingerprint
    hashes = fingerprint.combine(frame, list(frame.columns))
    return (fingerprint.dataset_fingerprint(hashes, list(frame.columns))[:12],)


CONTENDERS = {"reference": reference, "nbtrain": nbtrain_pipeline, "fingerprint": fingerprint_only}


def _peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS mark (Linux), so the peak counts the work, not the loading."""
    Path("/proc/self/clear_refs").write_text("5")


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(name: str, data: str) -> None:
    import nbtrain  # noqa: F401  imports (torch, scikit-learn) are not part of the work measured
    frame = pd.read_pickle(data)
    _peak_rss_reset()
    before = _rss("VmRSS")
    start = time.perf_counter()
    shape = CONTENDERS[name](frame)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_extra": _rss("VmHWM") - before, "shape": str(shape)}))


def run(name: str, data: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", name, "--data", str(data)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data)
    frame = make_table(args.rows)
    size = frame.memory_usage(deep=True).sum()
    print(f"table: {args.rows:,} rows x {frame.shape[1] - 1} features + target, {size / 2**30:.2f} GiB in memory")
    results: dict = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "table.pkl"
        frame.to_pickle(data)
        del frame
        for _ in range(args.repeats):
            for name in CONTENDERS:
                results[name].append(run(name, data))
    for name, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = statistics.median(r["peak_extra"] for r in runs)
        print(f"{name:>12}: {seconds:7.2f} s, peak extra memory {peak / 2**30:5.2f} GiB "
              f"({peak / size:.2f}x the table), output {runs[0]['shape']}")
    ref = statistics.median(r["seconds"] for r in results["reference"])
    ours = statistics.median(r["seconds"] for r in results["nbtrain"])
    peak = statistics.median(r["peak_extra"] for r in results["nbtrain"])
    print(f"time ratio nbtrain/reference: {ours / ref:.2f}x (target <= 1.5x)")
    print(f"peak memory nbtrain / table size: {peak / size:.2f}x (target <= 3x)")


if __name__ == "__main__":
    main()
