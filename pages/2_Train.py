"""Train: pick methods and settings, start a background job, watch it live, cancel it, open its runs."""
import pandas as pd
import streamlit as st

from clipsvd import app as ui
from clipsvd.app.text import md
from clipsvd.choices import TRANSFER_PROTOCOLS, field_choices, field_helps
from clipsvd.errors import ClipsvdError
from clipsvd.methods import available_methods, get_method
from clipsvd.models import resolve_device
from clipsvd.plots.training import loss_curve_figure
from clipsvd.training import ExperimentConfig
from clipsvd.training.experiment import target_choices
from clipsvd.training.estimate import estimate_run, full_size_note, measured_rates, recorded_rates, timing_key
from clipsvd.training.jobs import JobState

CPU_TEST_CAP = 20  # test images per class on CPU by default
SEED_CHOICES = list(range(1, 11))


# "dataset" (not None) for the dataset's own protocol: a selectbox whose value is None shows "Choose an option"
BACKBONE_CHOICES = ("dataset", *field_choices(ExperimentConfig)["backbone"])
MEASURED_KEY = "train_measured_rates"  # session state: rates timed on this page, by timing key


def settings() -> list[ExperimentConfig]:
    """The controls; returns one config per method × seed."""
    methods = st.multiselect("Methods", available_methods(), default=["clip-svd"], key="_w_train_methods",
                             format_func=lambda m: get_method(m).display_name)
    c1, c2, c3, c4 = st.columns(4)
    protocol = c1.radio("Protocol", field_choices(ExperimentConfig)["protocol"], horizontal=True,
                        key="_w_train_protocol", help=field_helps(ExperimentConfig)["protocol"])
    k = c2.number_input("Shots per class (0: all)", 0, 10_000, ui.shots() or 0, key="_w_train_shots")
    seeds = c3.multiselect("Seeds", SEED_CHOICES, default=[ui.data_seed()] if ui.data_seed() in SEED_CHOICES else [1],
                           key="_w_train_seeds", help="One run per method and seed; the papers report seeds 1, 2, 3.")
    on_cpu = ui.try_call(resolve_device, ui.device())
    on_cpu = on_cpu is None or on_cpu.type == "cpu"
    cap = c4.number_input("Max test images per class (0: all)", 0, 100_000, CPU_TEST_CAP if on_cpu else 0,
                          key="_w_train_test_cap")
    if on_cpu and cap:
        st.caption(f"On CPU, evaluation uses at most {cap} test images per class (a seeded subset, the same for "
                   "every method and seed) so a run ends in seconds to minutes; set 0 for the whole test split.")
    k = int(k) or None
    st.session_state[ui.SHOTS_KEY] = k
    backbone = st.selectbox(
        "Official protocol of", BACKBONE_CHOICES, key="_w_train_backbone",
        format_func=lambda b: {"dataset": "the dataset's (CoOp: natural, BiomedCoOp: biomedical, world-*: world, "
                                          "others: none)",
                               "natural": "natural images (CLIP ViT-B/16 presets)",
                               "biomedical": "biomedical images (BiomedCLIP presets)",
                               "world": "the generated world (README's measured search with the world CLIP)"}.get(b, b),
        help="Which preset the hyperparameters start from: the configs of the methods' repositories for this "
             "dataset, protocol and K, or for the generated world's datasets the best settings of README's small "
             "search (`python -m clipsvd config` prints the same).")
    backbone = None if backbone == "dataset" else backbone
    targets = target_widget(protocol)
    if targets is None:
        return []
    overrides = {}
    if methods:
        setting = ExperimentConfig(method=methods[0], dataset=ui.dataset_spec(), shots=k, protocol=protocol,
                                   backbone=backbone).setting()
        official = (f"the {setting.backbone} preset for {setting.dataset}" if setting.backbone
                    else "the methods' defaults (no preset for this dataset)")
        for method in methods:
            for source, values in get_method(method).preset(setting).by_source().items():
                st.caption(f"{get_method(method).display_name} starts from "
                           + ", ".join(f"{k}={v}" for k, v in values.items()) + f" — from {source}")
        with st.expander(f"Hyperparameters: {official}, {protocol}, K={k or 'all'}; open to change"):
            tabs = st.tabs([get_method(m).display_name for m in methods])
            for tab, method in zip(tabs, methods):
                with tab:
                    st.caption(get_method(method).summary)
                    overrides[method] = ui.hyperparameter_form(method, setting, key=f"hp-{method}")
                    if protocol == "base2novel" and not get_method(method).supports_novel_classes:
                        st.caption("This method cannot score novel classes: its novel accuracy and HM stay empty.")
        changed = [f"{m}: " + ", ".join(f"{k}={v}" for k, v in o.items()) for m, o in overrides.items() if o]
        st.caption("Changed from the defaults: " + ("; ".join(changed) if changed else "nothing"))
    configs = [ExperimentConfig(method=m, model=ui.model_spec(), dataset=ui.dataset_spec(), shots=k, seed=int(s),
                                protocol=protocol, targets=targets, backbone=backbone, hyperparameters=overrides[m],
                                device=ui.device(), max_test_per_class=int(cap) or None)
               for m in methods for s in seeds]
    # the CLI's validation (ExperimentConfig.validate): a combination it refuses is a message here, and no Start
    problems = list(dict.fromkeys(problem for problem in map(invalid, configs) if problem))
    for problem in problems:
        st.error(f"Cannot start: {md(problem)}", icon=":material/error:")
    return [] if problems else configs


def invalid(config: ExperimentConfig) -> str | None:
    """Why ExperimentConfig.validate (the CLI's check) refuses `config`, or None when it passes."""
    try:
        config.validate()
    except ClipsvdError as exc:
        return str(exc)
    return None


def target_widget(protocol: str) -> list[str] | None:
    """Under cross-dataset / domain-generalization, the datasets the trained run is also scored on: those found
    beside the chosen dataset (same kind and data root), the protocol's official targets chosen by default; the
    official ones missing from the data root are named with their folder. [] outside those protocols; None when
    none is chosen (nothing can start)."""
    if protocol not in TRANSFER_PROTOCOLS:
        return []
    spec = ui.dataset_spec()
    choices = ui.try_call(target_choices, spec, protocol)
    if choices is None:
        return None
    if not choices.options:
        st.error(f"No target datasets found beside {md(spec.name)}: {protocol} scores the trained run on other "
                 "datasets of the same layout and data root (choose a CoOp DATA folder on Model & data).",
                 icon=":material/error:")
        return None
    targets = st.multiselect("Targets", choices.options, default=choices.default,
                             key=ui.file_stem("_w_train_targets", protocol, spec.kind, spec.name, spec.root or ""),
                             help=field_helps(ExperimentConfig)["targets"])
    if choices.missing:
        st.caption(f"Official {protocol} targets not under the data root: "
                   + "; ".join(f"{name} ({md(where)})" for name, where in choices.missing.items()))
    if not targets:
        st.warning("Choose at least one target: the run is scored on the source and on each target.",
                   icon=":material/warning:")
        return None
    return targets


def time_estimate(configs: list[ExperimentConfig]) -> None:
    """Before Start: each method's run time on this machine, from runs recorded in the store or steps timed now,
    and what a full-size run would cost (clipsvd.training.estimate)."""
    if not configs:
        return
    dataset = ui.try_call(ui.cached_dataset, configs[0].dataset)
    if dataset is None:
        return
    measured = st.session_state.setdefault(MEASURED_KEY, {})
    store = ui.run_store()
    seeds = len({c.seed for c in configs})
    lines, total, missing = [], 0.0, []
    for config in {c.method: c for c in configs}.values():  # one estimate per method; seeds cost the same
        key = repr(timing_key(config))
        rates = measured.get(key) or ui.try_call(recorded_rates, config, store)
        name = get_method(config.method).display_name
        if rates is None:
            missing.append(config)
            lines.append(f"{name}: no run of this model, method and batch size recorded yet — time a few steps")
            continue
        estimate = ui.try_call(estimate_run, config, rates, dataset, load=ui.cached_dataset)
        if estimate is None:
            return
        total += estimate.seconds * seeds
        lines.append(f"{name}, per run: {estimate.sentence()}")
    head = (f"Estimated time on this machine: {ui.seconds_text(total)} for {len(configs)} run(s)" if not missing
            else "Estimated time on this machine")
    with st.container(border=True):
        st.markdown(f"**{head}**, plus loading the model and data (and CLIP-SVD's first decomposition of a new model).")
        for line in lines:
            st.text(line)
        if missing:
            busy = bool(ui.job_registry().active())
            if st.button("Time a few steps now", key="measure_steps", icon=":material/timer:", disabled=busy,
                         help="Loads the model, attaches each method and times 3 optimiser steps after a warm-up, "
                              "and a few test images (seconds for the world CLIP)."
                              + (" Wait for the running job: it would slow the timing." if busy else "")):
                with st.spinner("Timing a few steps…"):
                    for config in missing:
                        rates = ui.try_call(measured_rates, config, dataset)
                        if rates is not None:
                            measured[repr(timing_key(config))] = rates
                st.rerun()
        st.caption(full_size_note(configs[0].shots))


def current_job_id() -> str | None:
    """The job shown: ?job=<id> survives reloads, session state survives page switches; a new tab or session
    shows the server's running (else queued) job."""
    active = ui.job_registry().active()
    url_job = st.query_params.get("job")
    if url_job is not None and ui.job_registry().get(url_job) is None:
        if st.session_state.get(ui.JOB_KEY) != url_job:  # e.g. a link from before a restart: not stored anywhere
            st.caption(f"Ignored the link's job '{md(url_job[:40])}': this server has no such job.")
            st.query_params.pop("job", None)
            url_job = None
    job_id = (url_job or st.session_state.get(ui.JOB_KEY)
              or (active[0].job_id if active else None))
    if job_id:
        st.session_state[ui.JOB_KEY] = job_id
        st.query_params["job"] = job_id
    return job_id


START_KEY = "_train_start_outcome"  # what the last Start click did: ("job", id) or ("error", why)


def start(configs: list[ExperimentConfig]) -> None:
    """The Start button's on_click callback: Streamlit runs callbacks before the script, so the job is created
    before any page code, and clipsvd.app.reruns makes Streamlit run this callback even when a page switch sent
    right after the click arrives as the click's run starts (1 to 8 of 12-15 such clicks made no job before). The
    outcome is kept for the page to show: the job, or why there is none."""
    try:
        job_id = ui.job_registry().submit(configs, ui.run_store())
    except (ClipsvdError, ValueError, OSError) as exc:
        st.session_state[START_KEY] = ("error", f"No job was started: {exc}")
        return
    st.session_state[ui.JOB_KEY] = job_id
    st.session_state[START_KEY] = ("job", job_id)
    st.query_params["job"] = job_id


def start_outcome() -> None:
    """The last click's outcome, once: a job started, or why none was."""
    outcome = st.session_state.pop(START_KEY, None)
    if outcome is None:
        return
    kind, text = outcome
    if kind == "job":
        st.success(f"Started job {md(text)}.", icon=":material/play_arrow:")
    else:
        st.error(md(text), icon=":material/error:")


def progress_text(state: JobState) -> str:
    p = state.progress
    where = f"Run {min(state.index + 1, state.total)}/{state.total}"
    if state.done:
        return f"{where} · job {state.status}"
    if p is None:
        return f"{where} · {state.status}"
    if p.phase == "train":
        return f"{where} · training epoch {p.epoch}/{p.epochs}, step {p.step}/{p.total_steps}"
    if state.attach_fraction is not None:
        return f"{where} · decomposing matrix {p.step + 1}/{p.total_steps} (first time for this model only)"
    return f"{where} · {md(p.message or p.phase)}"


def running_metrics(state: JobState) -> None:
    p = state.progress
    cols = st.columns(5)
    cols[0].metric("Status", state.status)
    cols[1].metric("Current run", state.current_title.split(" · ")[0] if state.current_title else "—")
    cols[2].metric("Loss", f"{p.loss:.4f}" if p is not None and p.loss is not None else "—")
    cols[3].metric("Learning rate", f"{p.lr:.2e}" if p is not None and p.lr is not None else "—")
    eta = p.eta_s if p is not None and p.phase == "train" else None
    cols[4].metric("ETA (this run)", ui.seconds_text(eta))


def finished_metrics(state: JobState) -> None:
    cols = st.columns(4)
    cols[0].metric("Status", state.status)
    cols[1].metric("Runs saved", f"{len(state.run_ids)} of {state.total}")
    last = state.loss_points[-1]["loss"] if state.loss_points else None
    cols[2].metric("Last training loss", f"{last:.4f}" if last is not None else "—")
    took = state.finished - state.started if state.finished and state.started else None
    cols[3].metric("Took", ui.seconds_text(took))


def job_view(state: JobState) -> None:
    """Everything about one job; drawn by the live fragment while it runs, once more when it ends."""
    st.progress(state.fraction, text=progress_text(state))
    if state.attach_fraction is not None:
        st.progress(state.attach_fraction, text=f"CLIP-SVD's first decomposition of this model: "
                                                f"{md(state.progress.message)}. Cancel stops between two matrices.")
    for note in state.unsaved:
        st.warning(f"Cancelled before training began — {md(note)}. The next run of this model decomposes again.",
                   icon=":material/cancel:")
    if state.done:
        finished_metrics(state)
    else:
        running_metrics(state)
    if state.error:
        st.error(f"Training failed: {md(state.error)}")
        if state.error_detail:
            with st.expander("Traceback"):
                st.code(state.error_detail)
    if state.loss_points:
        points = pd.DataFrame(state.loss_points)
        fig = loss_curve_figure(points)
        st.plotly_chart(fig, key=f"loss-{state.job_id}")
        if state.done:  # not while polling: the buttons would be rebuilt every two seconds
            ui.figure_downloads(fig, ui.file_stem("job", state.job_id, "loss"), key="loss")
            ui.table_download(points, ui.file_stem("job", state.job_id, "loss"), key="loss", label="Loss (CSV)")
    with st.expander("Log", expanded=False):
        st.code("\n".join(state.messages[-200:]) or "—")


@st.fragment(run_every=2)
def live_job(job_id: str) -> None:
    state = ui.job_registry().get(job_id)
    if state is None:
        return
    if st.button("Cancel training", type="secondary", disabled=state.done, key="cancel_training",
                 icon=":material/stop_circle:"):
        ui.job_registry().cancel(job_id)
        state = ui.job_registry().get(job_id)
    job_view(state)
    if state.done:
        st.rerun()  # redraw the whole page once: the finished view has no timer


def finished_runs(state: JobState) -> None:
    if not state.run_ids:
        return
    st.subheader("Runs of this job")
    store = ui.run_store()
    for run_id in state.run_ids:
        run = ui.try_call(store.load, run_id)
        if run is None:
            continue
        left, right = st.columns([3, 2])
        left.markdown(f"**{md(ui.run_title(run))}**" + (f"  \n{md(run.message)}" if run.message else ""))
        with right:
            links = st.columns(3)
            with links[0]:
                ui.page_link("sigma", "σ shifts", run=run_id)
            with links[1]:
                ui.page_link("heads", "Heads", run=run_id)
            with links[2]:
                ui.page_link("runs", "Details", run=run_id)


def job_label(state: JobState) -> str:
    return f"{state.job_id} · {state.status} · {state.total} run(s) · {state.titles[0]}"


def job_section() -> None:
    job_id = current_job_id()
    if not job_id:
        st.info("No training job on this server yet: choose settings above and press **Start training**.")
        return
    state = ui.job_registry().get(job_id)
    if state is None:
        st.warning(f"Job {md(job_id)} is not known to this server (it was restarted?). Its finished runs are in the "
                   "run store; see the Runs page.")
        ui.page_link("runs")
        return
    jobs = ui.job_registry().list()
    if len(jobs) > 1:
        ids = [j.job_id for j in jobs]
        chosen = st.selectbox("Job", ids, index=ids.index(job_id) if job_id in ids else 0, key=f"_w_job-{job_id}",
                              format_func=lambda i: job_label(jobs[ids.index(i)]))
        if chosen != job_id:
            st.session_state[ui.JOB_KEY] = chosen
            st.query_params["job"] = chosen
            st.rerun()
    st.subheader(f"Job {job_id}")
    if state.done:
        job_view(state)
        finished_runs(state)
    else:
        live_job(job_id)


ui.page_header("Train", "Fine-tune one or several methods in this process; runs land in the run store.")
ui.model_notice()
data_col, link_col = st.columns([4, 1], vertical_alignment="center")
data_col.markdown(f"**Dataset** · {md(ui.dataset_label(ui.dataset_spec()))}")
with link_col:
    ui.page_link("data", "Change model or data")
configs = settings()
time_estimate(configs)
button_col, note_col = st.columns([1, 4], vertical_alignment="center")
button_col.button("Start training", type="primary", disabled=not configs, key="start_training",
                  icon=":material/play_arrow:", on_click=start, args=(configs,))
start_outcome()
note_col.caption(f"{len(configs)} run(s), one after another in the background; you can leave this page.")
st.divider()
job_section()
