"""The Verify page (issue 21): on a world run, the heads chosen in the URL are ablated before and after, the
tables and a patch-map figure appear, and bad input is a message, never an exception box."""
import dataclasses
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from clipsvd.data import DatasetSpec
from clipsvd.models import ModelSpec
from clipsvd.runs import RunStore
from clipsvd.training import ExperimentConfig, run_experiment

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/10_Verify.py"
TIMEOUT = 240


@pytest.fixture(scope="module")
def world_store(tmp_path_factory) -> RunStore:
    """One CLIP-SVD run of the world CLIP on the world's microscopy-like shapes (1 shot, 1 epoch, 2 test images
    per class: a capped test subset, so the masks and factors must follow its original rows)."""
    store = RunStore(tmp_path_factory.mktemp("verify-runs"))
    config = ExperimentConfig(method="clip-svd", model=ModelSpec.default(),
                              dataset=DatasetSpec("builtin", "world-shape-microscopy"), shots=1, seed=1, device="cpu",
                              hyperparameters={"epochs": 1}, max_test_per_class=2)
    assert run_experiment(config, store).status == "completed"
    return store


def verify_page(store: RunStore, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["runs_root"] = str(store.root)
    at.session_state["run_id"] = store.list()[0].run_id
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(PAGE)
    at.run()
    return at


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_verify_ablates_the_heads_of_the_url_and_maps_where_they_write(world_store):
    at = verify_page(world_store, heads="L3.H1,L2.H0")
    assert_no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert at.radio(key="_w_verify_kind").value == "heads"
    assert at.text_input(key="_w_verify_heads").value == "L3.H1,L2.H0"
    at.slider(key="_w_verify_images").set_value(2)
    at.slider(key="_w_verify_texts").set_value(5)
    at.slider(key="_w_verify_per_map").set_value(2)
    at.run()
    at.button(key="run-verify").click().run()
    assert_no_exception(at)
    assert not at.error, [e.value for e in at.error]
    tables = [frame.value for frame in at.dataframe]
    columns = [set(table.columns) for table in tables]
    assert {"accuracy (pretrained)", "accuracy (fine-tuned)", "drop (fine-tuned)"} <= columns[0]
    assert any("factor" in c for c in columns) and any("pointing" in c for c in columns)  # the world's checks
    for table in tables:
        assert not table.isna().any().any(), table
        assert "nan" not in table.to_string().lower()
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    maps = [c for c in charts if any(trace["type"] == "heatmap" for trace in c["data"])]
    assert maps and "8 × 8 patch grid" in maps[0]["layout"]["title"]["text"]
    scale = maps[0]["layout"]["coloraxis"]  # one scale for before and after, centred on 0, with its bar
    assert scale["cmin"] == -scale["cmax"] and scale["colorbar"]["title"]["text"] == "along the text"
    assert all(t.get("coloraxis") == "coloraxis" for t in maps[0]["data"] if t["type"] == "heatmap")
    assert at.query_params["heads"] == "L3.H1,L2.H0"
    assert list((world_store.list()[0].path / "verification").glob("ablation-*.json"))  # cached with the run


@pytest.mark.parametrize("query, message", [({"heads": "L9.H0"}, "layers L0..L3 and heads H0..H3"),
                                            ({"match": "*zzz* unicorn"}, "match '*zzz* unicorn': nothing ablated")])
def test_bad_heads_are_a_message_not_an_exception(world_store, query, message):
    at = verify_page(world_store, **query)
    at.slider(key="_w_verify_images").set_value(2)
    at.slider(key="_w_verify_texts").set_value(3)
    at.run()
    at.button(key="run-verify").click().run()
    assert_no_exception(at)
    shown = [e.value for e in at.error] + [i.value for i in at.info]
    plain = [text.replace("\\", "") for text in shown]  # user text is escaped, shown literally
    assert any(message in text for text in plain), shown
    assert not at.dataframe


def test_a_run_whose_data_is_gone_is_named_with_its_path(world_store, tmp_path):
    store = RunStore(tmp_path / "copy")
    source = world_store.list()[0]
    config = {**source.config, "dataset": {**source.config["dataset"], "kind": "imagefolder",
                                           "root": str(tmp_path / "gone-data")}}
    store.save(dataclasses.replace(source, path=None, config=config), source.adapter_tensors())
    at = verify_page(store, top="2")
    assert_no_exception(at)
    assert any(str(tmp_path / "gone-data") in e.value.replace("\\", "") for e in at.error), [e.value for e in at.error]


def test_the_report_shows_the_cached_verification(world_store):
    """After the Verify page ran (the test above), the run report's Verification section has its tables, their
    LaTeX and the patch maps, read back from the run folder."""
    from clipsvd.analysis.ablation import AblationStore
    from clipsvd.report import RunAnalysis, report_html
    from clipsvd.report.verification import verification_latex, wide_tables

    run = world_store.list()[0]
    cached = AblationStore(run).all()
    assert cached and cached[0].maps, "run the Verify test first (same module)"
    text = report_html([RunAnalysis(run, "world CLIP", "ov_change", verification=cached)])
    section = text.split("<h2>Verification</h2>")[1]
    assert "L3.H1, L2.H0 (hand-picked)" in section and "pointing game" in section and "shape" in section
    assert section.count('"type":"heatmap"') >= 2  # before and after of at least one map
    assert "8 × 8 patch grid" in section or r"8 \u00d7 8 patch grid" in section  # plotly's JSON escapes ×
    for name, table in wide_tables(cached[0]).items():
        latex = verification_latex(cached[0], name, table)
        assert latex.count(r"\begin{tabular}") == latex.count(r"\end{tabular}") == 1
        assert "nan" not in latex.lower()
    empty = report_html([RunAnalysis(run, "world CLIP", "ov_change")]).split("<h2>Verification</h2>")[1]
    assert "No ablation cached for this run" in empty
