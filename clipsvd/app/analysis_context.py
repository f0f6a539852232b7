"""What the analysis pages share: a stored run against its pretrained model (or, on Heads, Singular values and
Explain, against a second run of the same base picked under "Compare with"), and the head ranking."""
from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
import streamlit as st

from clipsvd.analysis.heads import (
    RANKING_MEASURES,
    HeadChange,
    head_change,
    head_change_note,
    pair_head_change_note,
    unchanged_weights_note,
)
from clipsvd.analysis.run_pair import RunPair, check_same_base, run_model_spec
from clipsvd.analysis.run_pair import analysis_images as run_analysis_images
from clipsvd.app import caches, selection
from clipsvd.app.run_picker import pick_run, run_title
from clipsvd.app.text import md
from clipsvd.app.widgets import try_call
from clipsvd.data import ClassificationDataset, DatasetSpec
from clipsvd.formatting import column_number_format
from clipsvd.plots.heads import MEASURE_TITLES as HEAD_MEASURE_TITLES
from clipsvd.runs import Run, RunStatus

HEADS_MEASURE_KEY = "heads_measure"  # the head-change measure chosen on Heads or Explain
COMPARE_KEY = "compare_run"  # the run chosen under "Compare with" (Heads, Singular values, Explain share it)
COMPARE_PARAM = "compare"  # ... and carried in the URL
PRETRAINED_CHOICE = "— the pretrained model it started from —"
# A cancelled run keeps the weights trained until the cancel: it is analysed like a completed one.
ANALYSED_STATUSES = (RunStatus.COMPLETED, RunStatus.CANCELLED)


@dataclasses.dataclass
class AnalysisContext(RunPair):
    """What every analysis page compares: the run, the pretrained model, the run's method, on a device."""

    device: str = "auto"

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identifies the pair in cache keys: (run store folder, run id, device, reference run id or "")."""
        return (str(self.run.path.parent), self.run.run_id, self.device,
                self.reference.run_id if self.reference is not None else "")


def pick_reference(run: Run) -> Run | None:
    """The "Compare with" choice: another analysed run (then "before" is that run's fine-tuned model), or None for
    the pretrained model. Remembered across the pages that offer it and carried in the URL (?compare=)."""
    others = [r for r in selection.run_store().list() if r.status in ANALYSED_STATUSES and r.run_id != run.run_id]
    ids = [None, *(r.run_id for r in others)]
    wanted = st.query_params.get(COMPARE_PARAM) or st.session_state.get(COMPARE_KEY)
    chosen = st.selectbox("Compare with", ids, index=ids.index(wanted) if wanted in ids else 0, key="_w_compare",
                          format_func=lambda run_id: PRETRAINED_CHOICE if run_id is None else
                          run_title(others[ids.index(run_id) - 1]),
                          help="Another run of the same base model: every figure then shows the fine-tuned run "
                               "above against that run directly (the difference of the two fine-tunes), not each "
                               "against the pretrained model.")
    st.session_state[COMPARE_KEY] = chosen
    if chosen is None:
        st.query_params.pop(COMPARE_PARAM, None)
        return None
    st.query_params[COMPARE_PARAM] = chosen
    return others[ids.index(chosen) - 1]


def analysis_context(compare: bool = False) -> AnalysisContext | None:
    """Run picker + the two models, with the untrained warning; None (and a message) if not possible. `compare`:
    offer "Compare with" a second run of the same base, which then takes the pretrained model's place."""
    run = pick_run("Fine-tuned run", statuses=ANALYSED_STATUSES, key="analysis")
    if run is None:
        return None
    reference = pick_reference(run) if compare else None
    if reference is not None and try_call(check_same_base, run, reference) is None:
        return None  # different bases: the message names both
    selection.run_model_notice(run)
    restored = try_call(caches.restored_run, str(run.path.parent), run.run_id, selection.device())
    if reference is None:
        before = try_call(caches.pretrained_model, run_model_spec(run), selection.device())
    else:
        other = try_call(caches.restored_run, str(reference.path.parent), reference.run_id, selection.device())
        before = other[1] if other is not None else None
    if restored is None or before is None:
        return None
    if reference is None:
        st.caption(f"Before: the model this run started from. After: {md(run.config.get('method'))} as trained in "
                   f"run {md(run.run_id)}.")
    else:
        st.caption(f"Before: run {md(reference.run_id)} ({md(reference.config.get('method'))}). After: run "
                   f"{md(run.run_id)} ({md(run.config.get('method'))}). Both fine-tuned the same base: every figure "
                   "shows the difference of the two fine-tunes directly.")
    return AnalysisContext(run, before, restored[1], reference, selection.device())


def unchanged_note(ctx: AnalysisContext, changed: bool, what: str) -> None:
    """Say plainly when a method left everything this page measures untouched (all-zero figures otherwise puzzle);
    for a method that changes no weight at all (`Method.changes_weights`), the one line the weight pages share.
    Against a reference run: that the two runs do not differ in it."""
    if ctx.reference is not None:
        if not changed or not ctx.changes_weights:
            st.info(pair_head_change_note(ctx.before_name, ctx.after_name, what), icon=":material/info:")
        return
    note = unchanged_weights_note(ctx.method, what)
    if note:
        st.info(note, icon=":material/info:")
    elif not changed:
        st.info(f"This run changed none of the {what}. {ctx.method.display_name} trains: {ctx.method.summary}",
                icon=":material/info:")


def heads_note(ctx: AnalysisContext, changes: pd.DataFrame, measure: str, what: str, instead: str = "") -> HeadChange:
    """One line where a ranking by weight change would mean nothing — a zero-shot run (nothing trained), a run
    that changed no attention weight (CLIPFit, ProLIP), or none under `measure` — with `instead` (what the page
    shows in its place) appended; nothing when heads changed. Returns the case, which the page acts on."""
    state = head_change(changes, measure, ctx.trains, ctx.changes_weights)
    if ctx.reference is not None:
        note = None if state.ranks_by_weight else pair_head_change_note(
            ctx.before_name, ctx.after_name, what, measure if state is HeadChange.NOT_BY_MEASURE else None, instead)
    else:
        note = head_change_note(state, what, ctx.method.display_name, ctx.method.summary, measure, instead)
    if note:
        st.info(note, icon=":material/info:")
    return state


def number_columns(table: pd.DataFrame) -> dict[str, Any]:
    """column_config for st.dataframe: every float column in `column_number_format` (tiny values stay readable,
    e.g. 3e-10, instead of Streamlit's run of zeros)."""
    return {column: st.column_config.NumberColumn(format=column_number_format(table[column]))
            for column in table.columns if pd.api.types.is_float_dtype(table[column])}


def analysis_images(run: Run, per_class: int) -> ClassificationDataset:
    """The run's dataset with at most `per_class` test images per class (seeded), all classes."""
    return run_analysis_images(run, per_class, caches.cached_dataset(DatasetSpec.from_dict(run.config["dataset"])))


def pick_heads_measure(where: Any = st, key: str = "heads") -> str:
    """The measure heads are ranked by, chosen on Heads or Explain: one choice for both pages, remembered
    across pages and carried in the URL (?measure=), so Explain starts from the ranking Heads showed."""
    wanted = st.query_params.get("measure") or st.session_state.get(HEADS_MEASURE_KEY)
    index = RANKING_MEASURES.index(wanted) if wanted in RANKING_MEASURES else 0
    chosen = where.selectbox("Rank heads by", RANKING_MEASURES, index=index, key=f"_w_{key}_measure",
                             format_func=lambda m: f"{m} ({HEAD_MEASURE_TITLES[m]})",
                             help="How a head's change is measured on the weights; shared by Heads and Explain.")
    st.session_state[HEADS_MEASURE_KEY] = chosen
    st.query_params["measure"] = chosen
    return chosen


def head_ranking(ctx: AnalysisContext, encoder: str, measure: str) -> pd.DataFrame | None:
    """Every head of one tower ranked by `measure` (cached per run): what Heads shows and Explain starts from."""
    return try_call(caches.cached_head_changes, ctx, ctx.key, encoder, measure)
