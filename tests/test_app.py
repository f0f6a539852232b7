"""Every dashboard page renders headless (streamlit AppTest) with the tiny model, on an empty and a filled run store."""
import dataclasses
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from clipsvd.data import DatasetSpec
from clipsvd.models import UNTRAINED_LABEL, WORLD_LABEL, ModelSpec
from clipsvd.runs import RunStore
from clipsvd.training import ExperimentConfig, run_experiment
from tests.conftest import TINY

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = {
    "pages/1_Model_and_data.py": "Model & data",
    "pages/2_Train.py": "Train",
    "pages/3_Singular_values.py": "Singular values",
    "pages/4_Heads.py": "Heads",
    "pages/5_Explain.py": "Explain (TextSpan)",
    "pages/6_Embeddings.py": "Embeddings",
    "pages/7_Compare.py": "Compare",
    "pages/8_Runs.py": "Runs",
    "pages/9_Reproduce.py": "Reproduce",
    "pages/10_Verify.py": "Verify",
}
TIMEOUT = 120  # pages import torch; the first run of a page also builds the tiny model
WORLD_DATASET = "world-shape-microscopy"  # the dashboard's default dataset


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory) -> RunStore:
    """Tiny runs: CLIP-SVD and CLIPFit over two seeds (few-shot) and one CLIP-SVD base→novel run; plus one
    CLIP-SVD run of the world CLIP on the default dataset (the world's microscopy-like shapes)."""
    store = RunStore(tmp_path_factory.mktemp("runs"))
    base = ExperimentConfig(method="clip-svd", model=TINY, dataset=DatasetSpec("builtin", "animal-shape"), shots=1,
                            seed=1, device="cpu", hyperparameters={"epochs": 1}, max_test_per_class=2)
    world = dataclasses.replace(base, model=ModelSpec.default(), dataset=DatasetSpec("builtin", WORLD_DATASET))
    assert run_experiment(world, store).status == "completed"  # first: the pages open on the newest run, a tiny one
    for change in ({}, {"seed": 2}, {"method": "clipfit"}, {"method": "clipfit", "seed": 2},
                   {"protocol": "base2novel"}):
        assert run_experiment(dataclasses.replace(base, **change), store).status == "completed"
    return store


@pytest.fixture(scope="module")
def imported_store(tmp_path_factory) -> tuple[RunStore, str]:
    """One imported run (issue 24): a full fine-tune of the tiny CLIP with known changes to attention and MLP
    weights of both towers, imported against its base as `clipsvd import` does."""
    import torch
    from safetensors.torch import save_file

    from clipsvd.importing import import_checkpoint
    from clipsvd.models import load_model

    root = tmp_path_factory.mktemp("imported")
    state = {k: v.clone().contiguous() for k, v in load_model(TINY, "cpu").model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for key in ("visual.transformer.resblocks.1.attn.in_proj_weight", "visual.transformer.resblocks.0.mlp.c_fc.weight",
                "transformer.resblocks.0.attn.out_proj.weight"):
        state[key] += 0.02 * torch.randn(state[key].shape, generator=generator)
    save_file(state, str(root / "finetuned.safetensors"))
    store = RunStore(root / "runs")
    return store, import_checkpoint(store, TINY, root / "finetuned.safetensors").run_id


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_an_imported_run(page, imported_store):
    store, run_id = imported_store
    at = app_at(page, store.root, run_id=run_id)
    assert_clean(at)
    assert at.title[0].value == PAGES[page]
    if page in ("pages/3_Singular_values.py", "pages/4_Heads.py"):
        assert at.get("plotly_chart"), "analysis figures missing"
        assert not any("trains nothing" in i.value for i in at.info)  # an imported fine-tune did change weights


def world_run_id(store: RunStore) -> str:
    [run] = [r for r in store.list() if r.config["model"]["architecture"] == "clipsvd-world"]
    return run.run_id


def app_at(page: str | None, root: Path, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["model_spec"] = TINY
    at.session_state["runs_root"] = str(root)
    at.session_state["shots"] = 1
    for key, value in state.items():
        at.session_state[key] = value
    if page:
        at.switch_page(page)
    at.run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_home_shows_methods_selection_warning_and_offline_notes(tmp_path):
    at = app_at(None, tmp_path)
    assert_clean(at)
    assert at.title[0].value == "clipsvd"
    assert any(UNTRAINED_LABEL in w.value for w in at.warning)
    notes = " ".join(i.value for i in at.info)
    assert "No real biomedical images ship offline" in notes and "No OpenAI or LAION CLIP weights ship" in notes
    assert "The generated world" in notes and "microscopy-like" in notes
    text = " ".join(m.value for m in at.markdown)
    assert all(f"`{m}`" in text for m in ("clip-svd", "clipfit", "prolip", "zero-shot", "linear-probe"))


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_an_empty_store(page, tmp_path):
    at = app_at(page, tmp_path / "empty")
    assert_clean(at)
    assert at.title[0].value == PAGES[page]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_a_filled_store(page, filled_store):
    # A CLIP-SVD run explicitly: runs saved in the same second sort by name, so "the newest" may be a CLIPFit run.
    [svd] = [r for r in filled_store.list() if r.config["method"] == "clip-svd" and r.config["seed"] == 2]
    at = app_at(page, filled_store.root, run_id=svd.run_id)
    assert_clean(at)
    assert at.title[0].value == PAGES[page]
    if page in ("pages/3_Singular_values.py", "pages/4_Heads.py"):
        assert at.get("plotly_chart"), "analysis figures missing"
        assert any(UNTRAINED_LABEL in w.value for w in at.warning)


def test_home_tells_the_world_story_on_the_default_model_and_data(tmp_path):
    at = app_at(None, tmp_path, model_spec=None)
    assert_clean(at)
    assert not at.warning  # the shipped world CLIP is pretrained: no untrained warning
    notes = " ".join(i.value for i in at.info)
    assert WORLD_LABEL in notes and "(safetensors)" in notes  # the full label: weights source + format + activation
    assert WORLD_DATASET in " ".join(m.value for m in at.markdown)
    assert "shapes, colours, sizes, positions, counts and fills" in notes


def test_model_and_data_page_previews_the_selected_dataset(tmp_path):
    at = app_at("pages/1_Model_and_data.py", tmp_path)
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classes"] == "8" and metrics["Train images"] == "1,280"  # world-shape-microscopy
    assert len(at.get("image")) >= 8  # one image per class at 1 shot
    assert any("No real biomedical images ship offline" in i.value for i in at.info)


def test_model_and_data_page_preselects_the_world_clip_and_the_microscopy_shapes(tmp_path):
    at = app_at("pages/1_Model_and_data.py", tmp_path, model_spec=None)
    assert_clean(at)
    assert at.selectbox(key="_w_arch").value == "clipsvd-world"
    assert at.radio(key="_w_weight_source-world").value == "Shipped (pretrained on the world)"
    assert "Random (seeded)" in at.radio(key="_w_weight_source-world").options  # random init stays available
    picker = at.selectbox(key="_w_builtin")
    assert picker.value == WORLD_DATASET
    world = [o for o in picker.options if o.startswith("world-")]
    assert len(world) == 9  # name — description
    assert any(o.startswith("world-shape-microscopy") and "shape task" in o and "stained" in o for o in world)
    at.button(key="use_model").click().run()
    assert_clean(at)
    assert at.session_state["model_spec"] == ModelSpec.default()
    assert any(WORLD_LABEL in s.value and "(safetensors)" in s.value for s in at.success)
    at.radio(key="_w_weight_source-world").set_value("Random (seeded)").run()
    at.button(key="use_model").click().run()
    assert_clean(at)
    assert at.session_state["model_spec"] == ModelSpec("clipsvd-world", "random")
    assert any(UNTRAINED_LABEL in w.value for w in at.warning)


def test_dataset_picker_shows_samples_of_the_chosen_world_dataset(tmp_path):
    at = app_at("pages/1_Model_and_data.py", tmp_path)
    before = len(at.get("image"))
    at.selectbox(key="_w_builtin").select("world-colour-sketch").run()
    assert_clean(at)
    assert any("One training image per class of world-colour-sketch" in c.value for c in at.caption)
    assert len(at.get("image")) > before
    at.button(key="use_dataset").click().run()
    assert_clean(at)
    assert at.session_state["dataset_spec"].name == "world-colour-sketch"
    assert any(h.value == "Selected dataset: world-colour-sketch" for h in at.subheader)
    assert not any("One training image per class" in c.value for c in at.caption)  # previewed below instead


def test_model_page_sets_the_tiny_model(tmp_path):
    at = app_at("pages/1_Model_and_data.py", tmp_path, model_spec=None)
    at.selectbox(key="_w_arch").select("clipsvd-tiny").run()
    at.button(key="use_model").click().run()
    assert_clean(at)
    assert at.session_state["model_spec"].architecture == "clipsvd-tiny"
    assert any("Model set" in s.value for s in at.success)


def test_model_page_loads_a_local_checkpoint_and_refuses_a_broken_one(tmp_path):
    from clipsvd.models import load_model, save_checkpoint

    good = save_checkpoint(load_model(TINY, "cpu").model, tmp_path / "tiny.safetensors")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    at = app_at("pages/1_Model_and_data.py", tmp_path)
    at.selectbox(key="_w_arch").select("clipsvd-tiny").run()
    at.radio(key="_w_weight_source-open_clip").set_value("Local checkpoint file").run()
    assert at.selectbox(key="_w_activation").value == "auto"
    at.text_input(key="_w_ckpt_path").input(str(broken)).run()
    at.button(key="use_model").click().run()
    assert any("broken.pt" in e.value.replace("\\", "") for e in at.error)
    assert at.session_state["model_spec"] == TINY  # unchanged
    at.text_input(key="_w_ckpt_path").input(str(good)).run()
    at.button(key="use_model").click().run()
    assert_clean(at)
    assert at.session_state["model_spec"].weights == str(good)
    assert not any(UNTRAINED_LABEL in w.value for w in at.warning)
    shown = [i.value.replace("\\", "") for i in at.info]  # as rendered: the label is escaped markdown (app.text.md)
    assert any("tiny.safetensors (safetensors)" in v and "activation unknown" in v for v in shown)
    at.selectbox(key="_w_activation").select("quickgelu").run()
    at.button(key="use_model").click().run()
    assert_clean(at)
    assert at.session_state["model_spec"].activation == "quickgelu"
    assert any("QuickGELU" in i.value and "activation unknown" not in i.value for i in at.info)


def test_train_page_runs_a_job_to_completion(tmp_path):
    at = app_at("pages/2_Train.py", tmp_path)
    epochs = [w.key for w in at.number_input if w.key.startswith("hp-clip-svd-few-shot-1-") and w.key.endswith("-epochs")]
    assert len(epochs) == 1, epochs  # the form's key names the setting the presets were resolved for
    at.number_input(key=epochs[0]).set_value(1).run()
    at.number_input(key="_w_train_test_cap").set_value(2).run()
    at.button(key="start_training").click().run()
    assert_clean(at)
    job_id = at.session_state["job_id"]
    assert at.query_params["job"] in (job_id, [job_id])
    deadline = time.time() + 90
    while time.time() < deadline and not any(s.value == "Runs of this job" for s in at.subheader):
        time.sleep(1)
        at.run()
    assert_clean(at)
    assert any(s.value == "Runs of this job" for s in at.subheader)
    [run] = RunStore(tmp_path).list()
    assert run.status == "completed" and run.config["shots"] == 1 and run.config["max_test_per_class"] == 2
    assert run.config["dataset"]["name"] == WORLD_DATASET


def test_compare_page_shows_mean_and_std_over_seeds(filled_store):
    at = app_at("pages/7_Compare.py", filled_store.root)
    assert_clean(at)
    table = at.dataframe[0].value
    assert set(table["method"]) == {"clip-svd", "clipfit"}
    assert all(" ± " in value for value in table["accuracy"]) and set(table["runs"]) == {2}
    at.selectbox(key="_w_cmp_protocol").select("base2novel").run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert {"base", "novel", "HM (avg of runs)", "HM (of avgs)"} <= set(table.columns)


def test_runs_page_deletes_after_confirmation(tmp_path, filled_store):
    store = RunStore(tmp_path / "copy")
    source = filled_store.list()[-1]
    store.save(dataclasses.replace(source, path=None), source.adapter_tensors())
    at = app_at("pages/8_Runs.py", store.root)
    assert_clean(at)
    at.button(key="delete_run").click().run()
    assert store.list(), "deleted without confirmation"
    at.button(key="confirm_delete_run").click().run()
    assert_clean(at)
    assert store.list() == []


@pytest.mark.parametrize("page, button", [("pages/5_Explain.py", "run-textspan"),
                                          ("pages/6_Embeddings.py", "run-umap")])
def test_heavy_analyses_run_on_request(page, button, filled_store):
    at = app_at(page, filled_store.root)
    assert not at.get("plotly_chart")
    at.button(key=button).click().run()
    assert_clean(at)
    assert at.get("plotly_chart")
    if page == "pages/5_Explain.py":  # the test images that score highest on a chosen text
        assert at.get("image")


def test_compare_methods_reports_both_hm_conventions_and_common_seeds():
    import pandas as pd

    from clipsvd.runs import common_seeds, compare_methods

    rows = [("a", 1, 80.0, 60.0), ("a", 2, 90.0, 40.0), ("b", 1, 70.0, 70.0), ("b", 3, 70.0, 70.0)]
    table = pd.DataFrame([{"run_id": f"{m}{s}", "status": "completed", "method": m, "dataset": "d",
                           "protocol": "base2novel", "shots": 4, "seed": s, "accuracy": None, "base": b, "novel": n,
                           "hm": 2 * b * n / (b + n), "trainable": 10, "trainable_fraction": 0.1,
                           "train_seconds": 1.0, "checkpoint_bytes": 100} for m, s, b, n in rows])
    assert common_seeds(table) == [1]
    a = compare_methods(table).set_index("method").loc["a"]
    assert a["n"] == 2 and a["seeds"] == "1, 2"
    assert a["base_mean"] == pytest.approx(85.0) and a["novel_mean"] == pytest.approx(50.0)
    assert a["hm_of_averages"] == pytest.approx(2 * 85 * 50 / 135)
    assert a["average_of_hms"] == pytest.approx((2 * 80 * 60 / 140 + 2 * 90 * 40 / 130) / 2)
    assert a["trainable"] == 10 and a["checkpoint_bytes"] == 100


def test_compare_filters_a_sweep_and_shows_the_shots_table(tmp_path):
    store = RunStore(tmp_path)
    base = ExperimentConfig(method="zero-shot", model=TINY, dataset=DatasetSpec("builtin", "animal-shape"), shots=1,
                            seed=1, device="cpu", max_test_per_class=2, sweep="sweep-test")
    for change in ({}, {"shots": 2}, {"seed": 2}, {"sweep": None}):
        run_experiment(dataclasses.replace(base, **change), store)
    at = app_at("pages/7_Compare.py", store.root)
    assert_clean(at)
    assert at.selectbox(key="_w_cmp_sweep").options == ["all runs", "sweep-test"]
    at.selectbox(key="_w_cmp_sweep").select("sweep-test").run()
    assert_clean(at)
    assert any("Across shots" in h.value for h in at.subheader)


def test_explain_presets_the_corpus_that_suits_the_runs_model(filled_store):
    tiny_run = next(r.run_id for r in filled_store.list() if r.config["model"]["architecture"] == "clipsvd-tiny")
    at = app_at("pages/5_Explain.py", filled_store.root, run_id=tiny_run)
    assert_clean(at)
    assert at.radio(key="_w_ts_corpus-general").value == "general"
    at = app_at("pages/5_Explain.py", filled_store.root, run_id=world_run_id(filled_store))
    assert_clean(at)
    assert at.radio(key="_w_ts_corpus-world").value == "world"
    assert any(WORLD_LABEL in i.value for i in at.info)  # the run's model, by its full label
    at.button(key="run-textspan").click().run()
    assert_clean(at)
    assert at.get("plotly_chart")


def test_default_corpus_for_models():
    from clipsvd.analysis.corpus import default_corpus_for

    assert default_corpus_for(ModelSpec.default()) == "world"
    assert default_corpus_for(ModelSpec("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")) \
        == "biomedical"
    assert default_corpus_for("local-dir:/models/my-biomed-clip") == "biomedical"
    assert default_corpus_for(ModelSpec("ViT-B-16", "openai")) == "general"
    assert default_corpus_for(TINY) == "general"


def test_train_page_shows_decomposition_progress_and_a_cancel_there(tmp_path):
    """A job in CLIP-SVD's first decomposition shows "decomposing matrix i/N"; Cancel stops it there, and the
    page says that nothing was trained or saved (the run does not vanish silently)."""
    from clipsvd import app as ui
    from clipsvd.methods.base import AttachCancelled
    from clipsvd.runs import Run
    from clipsvd.training.loop import Progress

    registry = ui.job_registry()  # the process-wide registry the page uses (st.cache_resource)
    reached = __import__("threading").Event()

    def decomposing(config, store, on_progress, cancel):
        on_progress(Progress("load", 2, 12, message="decomposing visual.transformer.resblocks.0.attn.in_proj_weight "
                                                    "(3/12; cached for later runs)"))
        reached.set()
        cancel.wait(60)
        message = str(AttachCancelled("clip-svd: cancelled while decomposing (3/12 weights)"))
        return Run("unsaved", config.to_dict(), {}, status="cancelled", message=message)

    runner, registry._runner = registry._runner, decomposing
    try:
        at = app_at("pages/2_Train.py", tmp_path)
        at.button(key="start_training").click().run()
        assert reached.wait(30)
        at.run()
        assert_clean(at)
        texts = [p.proto.text for p in at.get("progress")]
        assert any("decomposing matrix 3/12" in t for t in texts), texts
        assert any("CLIP-SVD's first decomposition" in t for t in texts), texts
        at.button(key="cancel_training").click().run()
        job_id = at.session_state["job_id"]
        assert registry.wait(job_id, 30).status == "cancelled"
        at.run()
        assert_clean(at)
        assert any("nothing was trained or saved" in w.value and "decomposing" in w.value for w in at.warning)
        assert not any(s.value == "Runs of this job" for s in at.subheader)
        assert RunStore(tmp_path).list() == []
    finally:
        registry._runner = runner


def test_train_form_starts_from_the_chosen_official_protocol(tmp_path):
    at = app_at("pages/2_Train.py", tmp_path)
    at.number_input(key="_w_train_shots").set_value(2).run()

    def iterations() -> str:
        fields = [w for w in at.text_input if w.key.startswith("hp-clip-svd-") and w.key.endswith("-iterations")]
        assert len(fields) == 1, [w.key for w in at.text_input]
        return fields[0].value

    assert iterations() == ""  # the world dataset: no official preset, epochs decide
    at.selectbox(key="_w_train_backbone").select("natural").run()
    assert_clean(at)
    assert iterations() == "400"  # CLIP-SVD natural few-shot: 200·K iterations
    assert any("Official value, from HealthX-Lab/CLIP-SVD@" in (w.help or "")
               for w in at.text_input if w.key.endswith("-iterations"))


def test_singular_values_page_says_why_a_clipfit_run_has_nothing_to_draw(filled_store):
    [clipfit] = [r for r in filled_store.list() if r.config["method"] == "clipfit" and r.config["seed"] == 1]
    at = app_at("pages/3_Singular_values.py", filled_store.root, run_id=clipfit.run_id)
    assert_clean(at)
    assert any("changed none of the attention or MLP matrices" in i.value for i in at.info)
    assert not at.get("plotly_chart")  # no all-zero heatmap


def test_selection_lives_in_the_url_and_the_run_store(tmp_path):
    """A reload (a new session) or a second tab starts from the last selection: the URL carries it, and a state
    file in the run store holds it for a session that comes without one."""
    import json

    at = app_at("pages/1_Model_and_data.py", tmp_path)
    at.selectbox(key="_w_builtin").select("world-colour-sketch").run()
    at.button(key="use_dataset").click().run()
    assert_clean(at)
    url = at.query_params["dataset"]
    assert json.loads(url if isinstance(url, str) else url[0])["name"] == "world-colour-sketch"
    state = json.loads((tmp_path / ".dashboard-state.json").read_text())
    assert state["dataset"]["name"] == "world-colour-sketch" and state["model"]["architecture"] == "clipsvd-tiny"
    fresh = AppTest.from_file(APP, default_timeout=TIMEOUT)  # a second tab: nothing in its session
    fresh.session_state["runs_root"] = str(tmp_path)
    fresh.switch_page("pages/8_Runs.py")
    fresh.run()
    assert_clean(fresh)
    assert fresh.session_state["dataset_spec"].name == "world-colour-sketch"
    assert fresh.session_state["model_spec"] == TINY
    assert not list(tmp_path.glob(".dashboard-state-*.tmp"))  # written atomically: no temporary file left


def test_train_form_keeps_its_values_across_a_page_switch(tmp_path):
    at = app_at("pages/2_Train.py", tmp_path)
    at.multiselect(key="_w_train_methods").set_value(["clip-svd", "clipfit"]).run()
    at.multiselect(key="_w_train_seeds").set_value([1, 2, 3]).run()
    at.number_input(key="_w_train_test_cap").set_value(5).run()
    at.switch_page("pages/7_Compare.py").run()
    assert_clean(at)
    at.switch_page("pages/2_Train.py").run()
    assert_clean(at)
    assert at.multiselect(key="_w_train_methods").value == ["clip-svd", "clipfit"]
    assert at.multiselect(key="_w_train_seeds").value == [1, 2, 3]
    assert at.number_input(key="_w_train_test_cap").value == 5


def test_every_page_shows_the_servers_running_job(tmp_path):
    """A job started anywhere on this server shows in every page's sidebar, with a link to it on Train; a new
    session opening Train sees it instead of "no job"."""
    import threading

    from clipsvd import app as ui
    from clipsvd.runs import Run

    registry, release = ui.job_registry(), threading.Event()

    def blocked(config, store, on_progress, cancel):
        release.wait(60)
        return Run("unsaved", config.to_dict(), {}, status="cancelled", message="test")

    runner, registry._runner = registry._runner, blocked
    try:
        config = ExperimentConfig(method="zero-shot", model=TINY, dataset=DatasetSpec("builtin", "animal-shape"),
                                  shots=1, device="cpu")
        job_id = registry.submit([config], RunStore(tmp_path))
        at = app_at("pages/7_Compare.py", tmp_path)
        assert_clean(at)
        assert any("Jobs on this server" in c.value for c in at.sidebar.caption)
        assert any(f"Open job {job_id}" in str(link.proto) for link in at.sidebar.get("page_link"))
        at = app_at("pages/2_Train.py", tmp_path)
        assert_clean(at)
        assert any(s.value == f"Job {job_id}" for s in at.subheader)
    finally:
        release.set()
        registry.wait(job_id, 30)
        registry._runner = runner


def test_heads_page_says_why_a_clipfit_run_has_no_ranking(filled_store):
    [clipfit] = [r for r in filled_store.list() if r.config["method"] == "clipfit" and r.config["seed"] == 1]
    at = app_at("pages/4_Heads.py", filled_store.root, run_id=clipfit.run_id)
    assert_clean(at)
    assert any("changed none of the visual attention heads" in i.value for i in at.info)
    assert not at.get("plotly_chart") and not any(m.label == "Most changed" for m in at.metric)
    assert any("W_O^h W_V^h" in m.value and "$" in m.value for m in at.markdown)  # the measures, as math


def test_heads_slider_offers_the_heads_that_exist(filled_store):
    [svd] = [r for r in filled_store.list() if r.config["method"] == "clip-svd" and r.config["seed"] == 2]
    at = app_at("pages/4_Heads.py", filled_store.root, run_id=svd.run_id)
    assert_clean(at)
    heads = int(next(m.value for m in at.metric if m.label == "Heads"))
    assert at.slider(key="_w_heads_top").max == heads == 4  # tiny vision tower: 2 layers × 2 heads


def test_a_link_to_a_cancelled_run_opens_that_run(tmp_path, filled_store):
    store = RunStore(tmp_path / "copy")
    [source] = [r for r in filled_store.list() if r.config["method"] == "clip-svd" and r.config["seed"] == 1
                and r.config["protocol"] == "few-shot" and r.config["model"]["architecture"] == "clipsvd-tiny"]
    newer = next(r for r in filled_store.list() if r.run_id != source.run_id)
    store.save(dataclasses.replace(newer, path=None), newer.adapter_tensors())
    cancelled = store.save(dataclasses.replace(source, path=None, run_id=source.run_id + "-c",
                                               status="cancelled", created="2000-01-01T00:00:00+00:00"),
                           source.adapter_tensors())  # the oldest: not what the page opens by default
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["runs_root"] = str(store.root)
    at.query_params["run"] = cancelled.run_id  # what Train's "σ shifts" link of a cancelled run carries
    at.switch_page("pages/3_Singular_values.py")
    at.run()
    assert_clean(at)
    assert at.selectbox(key="_w_analysis").value == cancelled.run_id
