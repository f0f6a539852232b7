"""Tables across runs: mean ± std over seeds, as in the papers' tables."""
from __future__ import annotations

from typing import Any

import pandas as pd

from clipsvd.formatting import fraction_as_percent, test_images_text
from clipsvd.runs.metrics import hm_summary
from clipsvd.runs.status import RunStatus

GROUP_BY = ("dataset", "protocol", "shots", "method")
METRICS = ("accuracy", "base", "novel", "hm", "target_average", "train_seconds")


def aggregate(table: pd.DataFrame, by: tuple[str, ...] = GROUP_BY) -> pd.DataFrame:
    """Mean and std of each metric per group of completed runs; n is the number of runs (seeds) in the group."""
    done = table[table["status"] == RunStatus.COMPLETED]
    metrics = [m for m in METRICS if m in done and done[m].notna().any()]
    if done.empty or not metrics:
        return pd.DataFrame(columns=[*by, "n"])
    numeric = done.assign(**{m: pd.to_numeric(done[m], errors="coerce") for m in metrics})
    grouped = numeric.groupby(list(by), dropna=False)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    out.insert(0, "n", grouped.size())
    return out.reset_index()


COST_COLUMNS = ("trainable", "trainable_fraction", "checkpoint_bytes")
TEST_SPLITS = ("all", "base", "novel")
FRACTION_HISTORY_COLUMNS = {"train_accuracy": "train_accuracy_pct"}  # stored 0..1, shown in % like every accuracy


def evaluated_images(metrics: dict[str, Any], config: dict[str, Any] | None = None, with_targets: bool = False
                     ) -> tuple[int | None, int | None]:
    """(n, N): the test images a run was scored on and the size of the test split(s) they were drawn from, so a
    score on a capped subset is never read as one on the whole split. N comes from `n_test_split_<split>` (recorded
    at evaluation); for older runs it is known only when the config set no `max_test_per_class` (then n = N),
    otherwise None — never guessed. `with_targets` adds a transfer run's targets (all its evaluation's images, for
    a time per image); without, the splits its `accuracy`/base/novel were measured on."""
    splits = [*TEST_SPLITS, *(metrics.get("targets") or [] if with_targets else [])]
    names = [s for s in splits if metrics.get(f"n_test_{s}") is not None]
    if not names:
        return None, None
    n = sum(int(metrics[f"n_test_{s}"]) for s in names)
    totals = [metrics.get(f"n_test_split_{s}") for s in names]
    if all(t is not None for t in totals):
        return n, sum(int(t) for t in totals)
    uncapped = config is not None and "max_test_per_class" in config and config["max_test_per_class"] is None
    return n, n if uncapped else None


def test_images_of(table: pd.DataFrame) -> str:
    """The distinct "n of N" texts of a table's runs (column `test_images`), e.g. for a group of seeds."""
    if "test_images" not in table:
        return "—"
    return "; ".join(dict.fromkeys(str(v) for v in table["test_images"].dropna())) or "—"


def measured_on_text(table: pd.DataFrame) -> str:
    """One sentence under a comparison: on how many test images each run was scored, and whether that is the
    whole test split (`n_test`, `n_test_split` and `test_images` columns of the runs table)."""
    if "n_test" not in table or table["n_test"].isna().all():
        return "Test images per run: not recorded."
    n = pd.to_numeric(table["n_test"], errors="coerce")
    total = pd.to_numeric(table["n_test_split"], errors="coerce")
    text = f"Test images per run: {test_images_of(table)}"
    if (n == total).all():
        return text + " (the whole test split)."
    if total.isna().any():
        return text + " (? : the split size was not recorded by older runs; a per-class cap may have applied)."
    return text + (" — a seeded subset of the test split (max test images per class), the same for every method "
                   "and seed: not comparable with scores on the whole split.")


def seeds_text(n: Any) -> str:
    """"1 seed" / "3 seeds": said beside a value that, with one seed, has no ± to show."""
    return "—" if n is None or pd.isna(n) else f"{int(n)} seed" + ("" if int(n) == 1 else "s")


def history_table(history: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """A run's per-epoch history as shown and exported: fractions (train accuracy) in percent like every other
    accuracy, in a column that says so (`train_accuracy_pct`); the stored history is untouched."""
    frame = pd.DataFrame(history).copy()
    for column, shown in FRACTION_HISTORY_COLUMNS.items():
        if column in frame and shown not in frame:  # converted once, also when a converted table comes back
            frame[column] = [fraction_as_percent(None if pd.isna(v) else float(v)) for v in frame[column]]
            frame = frame.rename(columns={column: shown})
    return frame


def common_seeds(table: pd.DataFrame) -> list:
    """Seeds every method of the table has a completed run for: the fair set to average over."""
    done = table[table["status"] == RunStatus.COMPLETED]
    if done.empty:
        return []
    per_method = [set(group["seed"]) for _, group in done.groupby("method")]
    return sorted(set.intersection(*per_method))


def compare_methods(table: pd.DataFrame, by: tuple[str, ...] = GROUP_BY) -> pd.DataFrame:
    """Methods side by side: `aggregate` (mean ± std over seeds) plus both base→novel HM conventions
    (HM of the averaged base/novel, and the average of per-run HMs), the seeds used, and the cost
    columns (trainable values and share, checkpoint bytes: the same for every seed, so their mean), and the test
    images the scores were measured on ("n of N", every distinct one of the group)."""
    summary = aggregate(table, by)
    if summary.empty:
        return summary
    done = table[table["status"] == RunStatus.COMPLETED]
    extra = []
    for key, group in done.groupby(list(by), dropna=False):
        rows = group[["base", "novel"]].to_dict("records")
        hm = hm_summary([{k: (None if pd.isna(v) else float(v)) for k, v in row.items()} for row in rows])
        costs = {c: pd.to_numeric(group[c], errors="coerce").mean() for c in COST_COLUMNS if c in group}
        extra.append({**dict(zip(by, key)), "seeds": ", ".join(str(s) for s in sorted(group["seed"].dropna())),
                      "test_images": test_images_of(group),
                      "hm_of_averages": hm["hm_of_averages"], "average_of_hms": hm["average_of_hms"], **costs})
    return summary.merge(pd.DataFrame(extra), on=list(by), how="left")


def per_class_accuracy(runs: list, split_key: str = "per_class") -> pd.DataFrame:
    """Mean and std over seeds of each class's accuracy, per method (long table: method, class, mean, std, n).

    `runs` are completed Run objects; `split_key` is "per_class", "per_class_base" or "per_class_novel".
    """
    rows = [{"method": run.config.get("method"), "class": name, "accuracy": value}
            for run in runs if run.status == RunStatus.COMPLETED
            for name, value in (run.metrics.get(split_key) or {}).items()]
    if not rows:
        return pd.DataFrame(columns=["method", "class", "mean", "std", "n"])
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["class"]))  # the dataset's label order
    out = frame.groupby(["method", "class"], sort=False)["accuracy"].agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"count": "n"})
    out["position"] = out["class"].map(order.index)
    return out.sort_values(["method", "position"]).drop(columns="position").reset_index(drop=True)


def run_per_class_table(run) -> pd.DataFrame:
    """Per-class accuracy of one run as rows (split, class, accuracy); empty when it was not evaluated."""
    rows = [{"split": split, "class": name, "accuracy": value}
            for split, key in (("all", "per_class"), ("base", "per_class_base"), ("novel", "per_class_novel"))
            for name, value in (run.metrics.get(key) or {}).items()]
    return pd.DataFrame(rows, columns=["split", "class", "accuracy"])


def run_target_table(run) -> pd.DataFrame:
    """A cross-dataset / domain-generalization run's targets as rows (target, accuracy, test images "n of N"),
    in the order it was scored on them; accuracy is None where the method cannot score new classes. Empty for
    any other run."""
    m = run.metrics
    rows = [{"target": t, "accuracy": m.get(f"accuracy_{t}"),
             "test_images": test_images_text(m.get(f"n_test_{t}"), m.get(f"n_test_split_{t}"))
             if m.get(f"n_test_{t}") is not None else "—"}
            for t in m.get("targets") or []]
    return pd.DataFrame(rows, columns=["target", "accuracy", "test_images"])


TRANSFER_COLUMNS = ("dataset", "role", "accuracy", "test_images")


def run_transfer_table(run) -> pd.DataFrame:
    """A transfer run's whole result in one table, as the papers print it: the source it was trained on, each
    target it was scored on unchanged (`run_target_table`), and the target average (None when a target has no
    score). The one table the Runs page, `runs show` and the report's CSV/LaTeX share; empty for any other run."""
    targets = run_target_table(run)
    if targets.empty:
        return pd.DataFrame(columns=list(TRANSFER_COLUMNS))
    m = run.metrics
    source = {"dataset": (run.config.get("dataset") or {}).get("name") or "?", "role": "source",
              "accuracy": m.get("accuracy"), "test_images": test_images_text(*evaluated_images(m, run.config))}
    average = {"dataset": "target average", "role": "average", "accuracy": m.get("target_average"),
               "test_images": "—"}
    rows = [source, *targets.rename(columns={"target": "dataset"}).assign(role="target").to_dict("records"), average]
    table = pd.DataFrame(rows, columns=list(TRANSFER_COLUMNS))
    return table.assign(accuracy=table["accuracy"].astype(float))  # no score: NaN, shown as "—"


def mean_std_text(row: pd.Series, metric: str, unit: str = "") -> str:
    """"mean ± std" of an aggregated metric (`<metric>_mean`, `<metric>_std`); the mean alone for one run (a
    single seed has no spread to show)."""
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None or pd.isna(mean):
        return "—"
    single = row.get("n") is not None and not pd.isna(row.get("n")) and int(row["n"]) < 2
    return f"{mean:.2f}{unit}" if single or std is None or pd.isna(std) else f"{mean:.2f} ± {std:.2f}{unit}"


def clear_best(summary: pd.DataFrame, metric: str) -> tuple[str | None, str]:
    """(the best method, why) — a method is called best only when its mean − std beats every other method's
    mean + std over at least two seeds each; otherwise (None, why not)."""
    ranked = summary.dropna(subset=[f"{metric}_mean"]).sort_values(f"{metric}_mean", ascending=False)
    if len(ranked) < 2:
        return None, "only one method has a score"
    if (ranked["n"] < 2).any():
        return None, "some methods have a single seed: no spread to separate them"
    std = ranked[f"{metric}_std"].fillna(0.0)
    low_of_best = ranked[f"{metric}_mean"].iloc[0] - std.iloc[0]
    high_of_others = (ranked[f"{metric}_mean"] + std).iloc[1:].max()
    if low_of_best > high_of_others:
        return ranked["method"].iloc[0], f"its mean − std ({low_of_best:.2f}) exceeds every other mean + std"
    return None, (f"{ranked['method'].iloc[0]} leads, but its mean − std ({low_of_best:.2f}) does not exceed the "
                  f"next mean + std ({high_of_others:.2f})")


def shots_table(table: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Methods × shots, each cell "mean ± std (n)" over seeds: the layout of the papers' few-shot tables."""
    summary = aggregate(table, ("method", "shots"))
    if summary.empty or f"{metric}_mean" not in summary:
        return pd.DataFrame()

    def cell(row: pd.Series) -> str:
        return f"{mean_std_text(row, metric)} ({int(row['n'])})"

    cells = summary.assign(cell=summary.apply(cell, axis=1),
                           shots=summary["shots"].map(lambda v: "all" if pd.isna(v) else f"{int(v)}-shot"))
    order = [f"{int(v)}-shot" for v in sorted(summary["shots"].dropna().unique())] + \
        (["all"] if summary["shots"].isna().any() else [])
    return cells.pivot(index="method", columns="shots", values="cell")[order].reset_index()
