"""Numbers a new user can compare: each says on how many test images it was measured, one seed shows no spread,
accuracy is in % everywhere; and the small things of the first ten minutes (a real default, every matrix kind in
sight, no "None" cells)."""
import pandas as pd

from clipsvd.models.layout import MATRIX_KINDS
from clipsvd.runs import RunStore
from tests.test_app import app_at, assert_clean, filled_store  # noqa: F401 (the module's runs, a fixture)


def test_compare_says_how_many_test_images_in_table_caption_and_figures(filled_store):  # noqa: F811
    at = app_at("pages/7_Compare.py", filled_store.root)
    assert_clean(at)
    table = at.dataframe[0].value
    run = next(r for r in filled_store.list() if r.config["method"] == "clipfit")
    n, total = run.metrics["n_test_all"], run.metrics["n_test_split_all"]
    assert n < total  # max 2 test images per class: a subset, recorded with the split's size
    assert set(table["test images"]) == {f"{n:,} of {total:,}"}
    assert any(f"{n:,} of {total:,}" in c.value and "subset" in c.value for c in at.caption)
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert charts and all(f"{n:,} of {total:,}" in spec for spec in charts)  # subtitle of bars and heatmap


def test_runs_page_shows_train_accuracy_in_percent_and_test_images_n_of_n(filled_store):  # noqa: F811
    run = next(r for r in filled_store.list() if r.config["method"] == "clip-svd" and r.config["seed"] == 1
               and r.config["protocol"] == "few-shot" and r.config["model"]["architecture"] == "clipsvd-tiny")
    at = app_at("pages/8_Runs.py", filled_store.root, run_id=run.run_id)
    assert_clean(at)
    assert "test_images" in at.dataframe[0].value  # the runs table (and its CSV)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Test images"] == f"{run.metrics['n_test_all']:,} of {run.metrics['n_test_split_all']:,}"
    history = next(d.value for d in at.dataframe if "epoch" in d.value)
    stored = pd.DataFrame(run.history)["train_accuracy"]
    assert list(history["train_accuracy_pct"]) == list(100 * stored) and "train_accuracy" not in history


def test_reproduce_without_measurements_shows_one_line_and_no_none_cells(tmp_path):
    at = app_at("pages/9_Reproduce.py", tmp_path / "runs")
    assert_clean(at)
    assert any("Nothing of this grid is measured yet" in i.value and "data root" in i.value for i in at.info)
    assert not at.get("plotly_chart") and not at.get("download_button")  # no empty chart, nothing to download
    [published] = [d.value for d in at.dataframe]
    cells = published.astype(str).to_numpy().ravel()
    assert len(published) and not any(c in ("None", "nan", "<NA>", "NaN") for c in cells)
    assert "published_accuracy" in published and "delta_accuracy" not in published


def test_train_official_protocol_has_a_real_default(tmp_path):
    at = app_at("pages/2_Train.py", tmp_path)
    assert_clean(at)
    choice = at.selectbox(key="_w_train_backbone")
    assert choice.value == "dataset" and choice.format_func(choice.value).startswith("the dataset's")


def test_train_form_shows_every_matrix_kind(tmp_path):
    at = app_at("pages/2_Train.py", tmp_path)
    assert_clean(at)
    [kinds] = [w for w in at.get("button_group") if w.proto.label == "matrix kinds"]
    assert [o.content for o in kinds.proto.options] == list(MATRIX_KINDS)
    assert list(kinds.proto.default) == list(range(len(MATRIX_KINDS)))  # all chosen, as the config's default


def test_singular_values_matrix_field_shows_every_kind(filled_store):  # noqa: F811
    svd = next(r for r in RunStore(filled_store.root).list() if r.config["method"] == "clip-svd")
    at = app_at("pages/3_Singular_values.py", filled_store.root, run_id=svd.run_id)
    assert_clean(at)
    assert at.radio(key="_w_sp_kind").options == list(MATRIX_KINDS)
