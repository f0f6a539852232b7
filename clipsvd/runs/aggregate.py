"""Tables across runs: mean ± std over seeds, as in the papers' tables."""
from __future__ import annotations

import pandas as pd

GROUP_BY = ("dataset", "protocol", "shots", "method")
METRICS = ("accuracy", "base", "novel", "hm", "train_seconds")


def aggregate(table: pd.DataFrame, by: tuple[str, ...] = GROUP_BY) -> pd.DataFrame:
    """Mean and std of each metric per group of completed runs; n is the number of runs (seeds) in the group."""
    done = table[table["status"] == "completed"]
    metrics = [m for m in METRICS if m in done and done[m].notna().any()]
    if done.empty or not metrics:
        return pd.DataFrame(columns=[*by, "n"])
    numeric = done.assign(**{m: pd.to_numeric(done[m], errors="coerce") for m in metrics})
    grouped = numeric.groupby(list(by), dropna=False)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    out.insert(0, "n", grouped.size())
    return out.reset_index()
