"""The report's "Verification" section: every ablation cached in the run folder (verification/), with the
tables the Verify page shows (pretrained and fine-tuned side by side), their LaTeX, and the patch maps."""
from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from clipsvd.analysis.ablation import AblationResult, effects_wide
from clipsvd.plots.verification import ablation_figure, patch_map_figure
from clipsvd.report.latex import latex_table

WIDE = {"overall": ("ablated", ("accuracy", "accuracy_ablated", "drop")),
        "per_class": ("class", ("accuracy", "accuracy_ablated", "drop")),
        "factors": ("factor", ("accuracy", "accuracy_ablated", "drop")),
        "texts": ("text", ("similarity", "similarity_ablated", "spread", "spread_ablated"))}
TITLES = {"overall": "Accuracy, overall (%)", "per_class": "Accuracy per class (%)",
          "factors": "Zero-shot accuracy per world factor (%)",
          "texts": "Cosine with the ablated heads' top texts (mean and spread over the images)",
          "ground_truth": "Pointing game and mass in the object's mask vs chance (world masks)"}
GROUND_TRUTH_COLUMNS = {"model": "model", "head": "head", "text": "first text", "pointing": "pointing game",
                        "mass_in_mask": "mass in mask", "chance": "chance", "n": "images"}


def wide_tables(result: AblationResult) -> dict[str, pd.DataFrame]:
    """Every table of an ablation as the page and the CLI show it: one row per key, both models as columns."""
    out = {}
    for name, table in result.tables().items():
        if name in WIDE and len(table):
            key, values = WIDE[name]
            out[name] = effects_wide(table, key, values).rename(columns={"ablated": "heads ablated"})
        elif len(table):
            out[name] = table[[c for c in GROUND_TRUTH_COLUMNS if c in table]].rename(columns=GROUND_TRUTH_COLUMNS)
    return out


def verification_latex(result: AblationResult, name: str, table: pd.DataFrame) -> str:
    """One ablation table as a booktabs table (text left, numbers right, one decimal)."""
    align = ["l" if not pd.api.types.is_numeric_dtype(table[c]) else "r" for c in table.columns]
    return latex_table(table, {c: c for c in table.columns}, align,
                       f"Mean ablation of {result.ablation.text()}: {TITLES[name]}", digits=3)


def verification_html(results: list[AblationResult], fig: Callable[[Any], str],
                      table: Callable[[pd.DataFrame, dict[str, str]], str], escape: Callable[[Any], str]) -> str:
    """The section's HTML: per cached ablation, what was ablated, its tables, the per-class figure, the maps."""
    if not results:
        return ('<p class="note">No ablation cached for this run: run one on the Verify page or with '
                "<code>clipsvd ablate RUN_ID</code>, then build the report again.</p>")
    out = []
    for result in results:
        settings = ", ".join(f"{k} {v}" for k, v in result.settings.items())
        out.append(f"<h3>Ablated: {escape(result.ablation.text())}</h3>"
                   + (f'<p class="note">{escape(settings)}</p>' if settings else ""))
        out.extend(f'<p class="note">{escape(note)}</p>' for note in result.notes)
        for name, frame in wide_tables(result).items():
            out.append(f"<p><b>{escape(TITLES[name])}</b></p>" + table(frame, {c: c for c in frame.columns}))
            out.append(f"<details><summary>LaTeX (booktabs)</summary><pre>"
                       f"{escape(verification_latex(result, name, frame))}</pre></details>")
        if len(result.per_class):
            out.append(fig(ablation_figure(result.per_class, f"Accuracy lost per class — {result.ablation.text()}")))
        for maps in result.maps:
            out.append(fig(patch_map_figure(maps)))
    return "".join(out)
