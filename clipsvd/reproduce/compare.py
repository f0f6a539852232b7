"""Measured vs published: per dataset mean ± std over seeds, the average over datasets, Δ where a number was
published, and for base→novel both HM conventions (HM of the averaged base/novel, and the average of per-dataset
HMs), each published number with its source."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clipsvd.errors import ConfigError
from clipsvd.reproduce.published import AVERAGE, Published, Table, get_table
from clipsvd.runs import RunStore, compare_methods
from clipsvd.runs.cells import cell_key, config_record
from clipsvd.runs.metrics import harmonic_mean
from clipsvd.runs.status import RunStatus
from clipsvd.training.experiment import ExperimentConfig

LEAD = ["kind", "method", "row", "shots", "dataset", "datasets", "n", "seeds"]
TAIL = ["published_source", "note"]
COLUMNS = {
    "few-shot": [*LEAD, "accuracy_mean", "accuracy_std", "published_accuracy", "delta_accuracy", *TAIL],
    "base2novel": [*LEAD, "base_mean", "base_std", "novel_mean", "novel_std", "hm_of_averages", "average_of_hms",
                   "published_base", "published_novel", "published_hm", "published_hm_convention", "delta_base",
                   "delta_novel", "delta_hm", *TAIL],
}
RUN_COLUMNS = ["run_id", "method", "dataset", "shots", "seed", "accuracy", "base", "novel", "hm", "model"]
MEASURED, REFERENCE = "measured", "reference"
TEXT_COLUMNS = {*LEAD, *TAIL, "published_hm_convention"}
HM_COLUMN = {"hm-of-averages": "hm_of_averages", "average-of-hms": "average_of_hms"}


def _row(run, dataset: str) -> dict:
    m, cfg = run.metrics, run.config
    return {"run_id": run.run_id, "method": cfg.get("method"), "dataset": dataset, "shots": cfg.get("shots"),
            "seed": cfg.get("seed"), **{k: m.get(k) for k in ("accuracy", "base", "novel", "hm")},
            "model": str(sorted((cfg.get("model") or {}).items()))}


def measured_runs(table: Table | str, store: RunStore, configs: list[ExperimentConfig] | None = None) -> pd.DataFrame:
    """The newest completed run of each cell. With `configs` (the grid), runs match a cell by `cell_key`;
    without, by the table's protocol, backbone and datasets (ConfigError when they started from several models)."""
    table = get_table(table) if isinstance(table, str) else table
    rows, seen = [], set()
    if configs is not None:
        wanted = {cell_key(config_record(c)): table.dataset_of(c.dataset.name) for c in configs}
        for run in store.list():  # newest first
            key = cell_key(run.config)
            if run.status == RunStatus.COMPLETED and key in wanted and key not in seen:
                seen.add(key)
                rows.append(_row(run, wanted[key]))
        return pd.DataFrame(rows, columns=RUN_COLUMNS)
    for run in store.list():
        setting = run.config.get("setting") or {}
        dataset = table.dataset_of(setting.get("dataset") or "")
        if (run.status != RunStatus.COMPLETED or setting.get("protocol") != table.protocol
                or setting.get("backbone") != table.backbone or dataset not in table.datasets):
            continue
        row = _row(run, dataset)
        cell = (row["method"], dataset, row["shots"], row["seed"])
        if cell not in seen:
            seen.add(cell)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    if frame["model"].nunique() > 1:
        raise ConfigError(f"runs of {frame['model'].nunique()} different models match table {table.name}; give the "
                          "grid (data root and model) to compare one of them")
    return frame


def _per_seed_std(runs: pd.DataFrame, metric: str) -> float:
    """Std over seeds of the dataset-averaged metric, on the seeds every measured dataset has."""
    grid = runs.pivot_table(index="seed", columns="dataset", values=metric, aggfunc="mean").dropna()
    return float(grid.mean(axis=1).std()) if len(grid) > 1 else np.nan


def _published(table: Table, method: str, dataset: str, shots: int) -> tuple[Published | None, dict[str, float]]:
    found = table.published_cell(method, dataset, shots)
    return (found[0], found[1]) if found else (None, {})


def _fill_published(out: dict, table: Table, row: Published | None, values: dict[str, float], comparable: bool) -> None:
    """Published numbers, Δ (when comparable) and the source into one output row."""
    if row is None:
        return
    out["row"] = row.label
    out["published_source"] = table.source_text(row.source)
    for metric, value in values.items():
        out[f"published_{metric}"] = value
        measured = out.get(HM_COLUMN.get(row.hm_convention or "", "hm_of_averages") if metric == "hm"
                           else f"{metric}_mean")
        if comparable and measured is not None and not pd.isna(measured):
            out[f"delta_{metric}"] = measured - value
    if table.protocol == "base2novel":
        out["published_hm_convention"] = row.hm_convention or ""


def _notes(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def compare(table: Table | str, store: RunStore, configs: list[ExperimentConfig] | None = None) -> pd.DataFrame:
    """Measured vs published, one row per (method, K, dataset) measured plus an average row per (method, K),
    and the table's reference rows. Δ = measured − published where a number was published; on the average only
    when every dataset of the table was measured (the published average is over all of them). Base→novel
    per dataset: `hm_of_averages` is the HM of the seed-mean base and novel, `average_of_hms` the mean of
    per-run HMs; on the average row: the HM of the dataset-averaged base and novel, and the mean over datasets
    of each dataset's HM. Δ HM uses the convention the published number was formed with."""
    table = get_table(table) if isinstance(table, str) else table
    runs = measured_runs(table, store, configs)
    metrics = list(table.metrics)
    planned = [c.method for c in configs] if configs is not None else list(table.methods)
    methods = list(dict.fromkeys([*planned, *runs["method"]]))
    ks = sorted({c.shots for c in configs} if configs else set(table.shots) | set(runs["shots"].dropna()))
    per_dataset = pd.DataFrame()
    if not runs.empty:
        numeric = runs.assign(status="completed", **{m: pd.to_numeric(runs[m], errors="coerce")
                                                     for m in ("accuracy", "base", "novel", "hm")})
        per_dataset = compare_methods(numeric, by=("method", "shots", "dataset"))
    rows = []
    for method in methods:
        for k in ks:
            part = per_dataset[(per_dataset["method"] == method) & (per_dataset["shots"] == k)] \
                if not per_dataset.empty else per_dataset
            order = {name: i for i, name in enumerate(table.datasets)}
            for _, cell in sorted(part.iterrows(), key=lambda item: order.get(item[1]["dataset"], len(order))):
                out = {"kind": MEASURED, "method": method, "row": method, "shots": k, "dataset": cell["dataset"],
                       "n": int(cell["n"]), "seeds": cell["seeds"]}
                for metric in metrics:
                    if metric == "hm":
                        out.update(hm_of_averages=cell.get("hm_of_averages"), average_of_hms=cell.get("average_of_hms"))
                    else:
                        out.update({f"{metric}_mean": cell.get(f"{metric}_mean"),
                                    f"{metric}_std": cell.get(f"{metric}_std")})
                published, values = _published(table, method, cell["dataset"], k)
                _fill_published(out, table, published, values, comparable=True)
                out["note"] = _notes("" if published else table.per_dataset, published.note if published else "")
                rows.append(out)
            rows.append(_average_row(table, method, k, part, runs))
    for ref in (r for r in table.published if r.reference):
        for k in (k for k in ks if k in ref.values):
            out = {"kind": REFERENCE, "method": "", "row": ref.label, "shots": k, "dataset": ref.dataset}
            _fill_published(out, table, ref, ref.values[k], comparable=False)
            out["note"] = ref.note
            rows.append(out)
    frame = pd.DataFrame(rows, columns=COLUMNS[table.protocol])
    numeric = [c for c in frame.columns if c not in TEXT_COLUMNS]
    return frame.astype({c: "float64" for c in numeric}).astype({"n": "Int64", "shots": "Int64"})


def measured_rows(comparison: pd.DataFrame) -> pd.DataFrame:
    """The rows of `compare` output that hold a measurement (at least one run); empty before anything ran."""
    return comparison[(comparison["kind"] == MEASURED) & (comparison["n"].fillna(0) > 0)]


def published_view(comparison: pd.DataFrame) -> pd.DataFrame:
    """The published numbers alone (ours and the reference rows), one row per published cell, for the state where
    nothing is measured yet: no measured/Δ columns, which would be empty, and no empty cells (missing: "—")."""
    values = [c for c in comparison.columns if c.startswith("published_") and c not in
              ("published_source", "published_hm_convention")]
    part = comparison[comparison[values].notna().any(axis=1)]
    columns = ["row", "shots", "dataset", *values, "published_source"]
    view = part[columns].drop_duplicates().rename(columns={"row": "method", "shots": "K",
                                                           "published_source": "source"})
    shown = view.assign(**{c: [f"{v:.2f}" if pd.notna(v) else "—" for v in view[c]] for c in values},
                        K=[str(int(k)) if pd.notna(k) else "—" for k in view["K"]])
    return shown.astype("object").where(shown.notna(), "—").reset_index(drop=True)


def _average_row(table: Table, method: str, k: int, part: pd.DataFrame, runs: pd.DataFrame) -> dict:
    """The mean over the measured datasets; std over seeds of the dataset-averaged score."""
    measured = len(part)
    out = {"kind": MEASURED, "method": method, "row": method, "shots": k, "dataset": AVERAGE,
           "datasets": f"{measured}/{len(table.datasets)}", "n": int(part["n"].sum()) if measured else 0}
    mine = runs[(runs["method"] == method) & (runs["shots"] == k)]
    if measured:
        seeds = mine.pivot_table(index="seed", columns="dataset", values="run_id", aggfunc="count").dropna().index
        out["seeds"] = ", ".join(str(s) for s in sorted(seeds))
        for metric in table.metrics:
            if metric == "hm":
                out["hm_of_averages"] = harmonic_mean(_mean(out.get("base_mean")), _mean(out.get("novel_mean")))
                out["average_of_hms"] = part["hm_of_averages"].mean() if part["hm_of_averages"].notna().all() else None
            else:
                out[f"{metric}_mean"] = part[f"{metric}_mean"].mean() if part[f"{metric}_mean"].notna().all() else None
                out[f"{metric}_std"] = _per_seed_std(mine.assign(**{metric: pd.to_numeric(mine[metric])}), metric)
    complete = measured == len(table.datasets)
    published, values = _published(table, method, AVERAGE, k)
    _fill_published(out, table, published, values, comparable=complete)
    any_published = any(r.method == method for r in table.published)
    out["note"] = _notes(
        "not measured yet" if not measured else "" if complete else
        f"average over {measured} of {len(table.datasets)} datasets: no Δ (the published average is over all "
        f"{len(table.datasets)})",
        published.note if published else
        (next(r.note for r in table.published if r.method == method) or f"not published at K={k}") if any_published
        else "no published row for this method in this table")
    return out


def _mean(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def write_outputs(comparison: pd.DataFrame, table: Table, out: str | Path, image_formats: tuple[str, ...] = ("png",)
                  ) -> tuple[list[Path], list[str]]:
    """measured_vs_published.csv and the figures (HTML always; each image format if kaleido can render it) into
    `out`; returns the files written and notes on what could not be."""
    from clipsvd.plots.export import ExportError, export_figure, export_table
    from clipsvd.plots.reproduce import reproduce_figures

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "measured_vs_published.csv"]
    written[0].write_bytes(export_table(comparison))
    notes: list[str] = []
    for name, fig in reproduce_figures(comparison, table).items():
        for fmt in ("html", *image_formats):
            try:
                data = export_figure(fig, fmt)
            except ExportError as exc:
                notes.append(f"{name}.{fmt} not written: {exc}")
                continue
            path = folder / f"{name}.{fmt}"
            path.write_bytes(data)
            written.append(path)
    return written, list(dict.fromkeys(notes))


__all__ = ["COLUMNS", "MEASURED", "REFERENCE", "compare", "measured_rows", "measured_runs", "published_view",
           "write_outputs"]
