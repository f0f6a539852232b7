"""Cross-dataset transfer and domain generalisation across runs: the papers' Tables 2 and 3 layout (CoOp/CoCoOp),
one row per method — the source's accuracy, each target's, and the average over targets — mean ± std over seeds,
beside the published target average where an official README publishes one (none does: `published_target_average`
says where each method's number would be and why it is not shipped).

Compare shows this for the runs it filtered (one model, source, protocol and K); Reproduce for every transfer run in
the store, one table per model, protocol, source and K.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from clipsvd.choices import TRANSFER_PROTOCOLS
from clipsvd.models import ModelSpec
from clipsvd.runs import Run, RunStatus
from clipsvd.runs.aggregate import mean_std_text

GROUP = ("model", "protocol", "dataset", "shots")  # one transfer table per group, one row per method in it
NOT_PUBLISHED = "not published"
# Why no published target average ships, per method: what each official README holds (read at these commits).
UNPUBLISHED_WHY = {
    "clip-svd": "HealthX-Lab/CLIP-SVD@022b1eda02df README.md publishes few-shot and base→novel averages only; the "
                "paper's transfer tables (arXiv 2509.03740) could not be read offline",
    "prolip": "astra-vision/ProLIP@18facf5d4cd6 README.md points to the paper's Table 3 (cross-dataset) and Table 4 "
              "(domain generalisation), arXiv 2410.05270, which could not be read offline",
    "clipfit": "minglllli/CLIPFit@0058c6ca5e51 README.md has no results; the paper (arXiv 2409.16718) could not be "
               "read offline",
}


def published_target_average(method: str, protocol: str) -> tuple[float | None, str]:
    """(published average over the protocol's official targets, where it comes from or why there is none). No
    official README this package reads publishes one, so the value is None and the text says why."""
    if protocol not in TRANSFER_PROTOCOLS:
        raise ValueError(f"published_target_average: {protocol} is not a transfer protocol")
    why = UNPUBLISHED_WHY.get(method, "no official README read for this package publishes a "
                                      f"{protocol} number for this method")
    return None, f"{NOT_PUBLISHED}: {why}"


def transfer_rows(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per completed transfer run: its group (model label, protocol, source dataset, K), method, seed,
    source accuracy, `target_average` and one `accuracy_<target>` column per target it was scored on."""
    rows = []
    for run in runs:
        cfg, m = run.config, run.metrics
        if run.status != RunStatus.COMPLETED or cfg.get("protocol") not in TRANSFER_PROTOCOLS:
            continue
        targets = list(m.get("targets") or [])
        rows.append({
            "run_id": run.run_id, "model": ModelSpec.from_dict(cfg.get("model") or {}).label,
            "protocol": cfg.get("protocol"), "dataset": (cfg.get("dataset") or {}).get("name"),
            "shots": cfg.get("shots"), "method": cfg.get("method"), "seed": cfg.get("seed"),
            "targets": tuple(targets), "accuracy": m.get("accuracy"), "target_average": m.get("target_average"),
            **{f"accuracy_{t}": m.get(f"accuracy_{t}") for t in targets},
        })
    return pd.DataFrame(rows, columns=["run_id", *GROUP, "method", "seed", "targets", "accuracy", "target_average",
                                       *sorted({k for r in rows for k in r if k.startswith("accuracy_")})])


def target_names(rows: pd.DataFrame) -> list[str]:
    """The targets of `transfer_rows` output in the order the runs name them (the official order by default)."""
    return list(dict.fromkeys(t for targets in rows["targets"] for t in targets))


def transfer_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method of one group: runs, seeds, source accuracy and each target's mean and std over seeds, the
    target average's mean and std, and the published target average with its source or why there is none.
    Runs of one method scored on different target sets get no average (it would mix targets): the note says so."""
    targets = target_names(rows)
    out = []
    for method, group in rows.groupby("method", sort=True):
        protocol = group["protocol"].iloc[0]
        row: dict[str, Any] = {"method": method, "n": len(group),
                               "seeds": ", ".join(str(s) for s in sorted(group["seed"].dropna()))}
        for metric in ("accuracy", *(f"accuracy_{t}" for t in targets), "target_average"):
            values = pd.to_numeric(group[metric], errors="coerce") if metric in group else pd.Series([np.nan])
            row[f"{metric}_mean"] = values.mean() if values.notna().all() else np.nan
            row[f"{metric}_std"] = values.std() if values.notna().all() and len(values) > 1 else np.nan
        notes = []
        if group["targets"].nunique() > 1:
            row["target_average_mean"] = row["target_average_std"] = np.nan
            notes.append("runs scored on different targets: no average over them")
        if group["target_average"].isna().any() and group["accuracy"].notna().all():
            notes.append("this method cannot score new classes: the targets stay empty")
        published, where = published_target_average(method, protocol)
        row["published_target_average"] = np.nan if published is None else published
        row["published"] = where
        row["note"] = "; ".join(notes)
        out.append(row)
    return pd.DataFrame(out)


def transfer_view(summary: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """`transfer_summary` as text, the papers' layout: method, runs, seeds, source, each target, their average,
    the published average ("not published" where none is), and the note."""
    rows = []
    for _, row in summary.iterrows():
        published = row.get("published_target_average")
        out = {"method": row["method"], "runs": int(row["n"]), "seeds": row["seeds"],
               "source": mean_std_text(row, "accuracy")}
        out.update({target: mean_std_text(row, f"accuracy_{target}") for target in targets})
        out["target average"] = mean_std_text(row, "target_average")
        out["published target average"] = NOT_PUBLISHED if pd.isna(published) else f"{published:.2f}"
        out["published: source"] = row["published"].removeprefix(f"{NOT_PUBLISHED}: ")
        out["note"] = row.get("note") or ""
        rows.append(out)
    return pd.DataFrame(rows)


def transfer_tables(runs: Sequence[Run]) -> list[tuple[dict[str, Any], pd.DataFrame, list[str]]]:
    """Every transfer table the runs make: (the group — model, protocol, source, K —, its summary, its targets),
    the group with the most runs first."""
    rows = transfer_rows(runs)
    if rows.empty:
        return []
    groups = sorted(rows.groupby(list(GROUP), dropna=False), key=lambda item: -len(item[1]))
    return [(dict(zip(GROUP, key)), transfer_summary(part), target_names(part)) for key, part in groups]


__all__ = ["NOT_PUBLISHED", "published_target_average", "target_names", "transfer_rows", "transfer_summary",
           "transfer_tables", "transfer_view"]
