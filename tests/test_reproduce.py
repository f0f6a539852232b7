"""`reproduce`: the published tables ship with sources, the grid and its dry run, a two-cell run on local Ray that
resumes, measured vs published (Δ, both HM conventions), and the Reproduce page."""
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from clipsvd.cli import main
from clipsvd.data import DatasetSpec, load_dataset
from clipsvd.errors import ConfigError
from clipsvd.reproduce import available_tables, compare, config_record, get_table, grid
from clipsvd.reproduce.published import SOURCE_FIELDS, parse_table
from clipsvd.runs import Run, RunStore
from clipsvd.training import ExperimentConfig, harmonic_mean, planned_steps
from tests.conftest import TINY
from tests.test_app import app_at, assert_clean
from tests.test_data import biomed_tree, png, write_json

TINY_ARGS = ["--arch", "clipsvd-tiny", "--weights", "random"]


def coop_tree(root: Path, folder: str, split_name: str, image_dir: str, classes: list[str]) -> Path:
    """A CoOp dataset folder with split_zhou_<Name>.json: 3 train, 1 val, 2 test images per class."""
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(classes):
        for part, n in (("train", 3), ("val", 1), ("test", 2)):
            for i in range(n):
                rel = f"{name}/{part}_{i}.png"
                png(root / folder / image_dir / rel, value=60 * label + 10 * i)
                split[part].append([rel, label, name])
    write_json(root / folder / f"split_zhou_{split_name}.json", split)
    return root


@pytest.fixture
def coop_root(tmp_path) -> Path:
    root = coop_tree(tmp_path / "DATA", "eurosat", "EuroSAT", "2750", ["Forest", "River", "Highway", "SeaLake"])
    return coop_tree(root, "dtd", "DescribableTextures", "images", ["banded", "dotted", "striped"])


# ----------------------------------------------------------------------------- the published tables


def test_published_numbers_ship_with_a_source_for_every_table():
    names = available_tables()
    assert set(names) == {"clip-svd-few-shot-natural", "clip-svd-base2novel-natural", "clip-svd-few-shot-biomedical",
                          "clip-svd-base2novel-biomedical", "prolip-base2novel-natural"}
    for name in names:
        table = get_table(name)
        assert table.published and not table.hyperparameters, name  # shipped tables run the official presets
        assert table.per_dataset == "not published per dataset (paper tables not available offline)"
        for row in table.published:
            source = table.sources[row.source]
            assert all(source[f] for f in SOURCE_FIELDS), (name, row.label)
            assert row.dataset == "average" and row.values, (name, row.label)
            assert row.reference == (row.method is None)
            for k, cell in row.values.items():
                assert k in table.shots and set(cell) <= set(table.metrics)
                if "hm" in cell:  # the convention is the one the published numbers obey
                    hm_of_averages = harmonic_mean(cell["base"], cell["novel"])
                    assert (abs(hm_of_averages - cell["hm"]) < 0.011) == (row.hm_convention == "hm-of-averages")
    few = get_table("clip-svd-few-shot-natural")
    assert few.published_cell("clip-svd", "average", 1)[1] == {"accuracy": 73.20}
    assert few.published_cell("zero-shot", "average", 4)[1] == {"accuracy": 65.36}
    assert few.published_cell("zero-shot", "average", 1) is None  # the README gives zero-shot at K=4 only
    assert few.sources["readme"]["commit"] == "022b1eda02df7a5a1311d0868d49874d69b0010e"
    bio = get_table("clip-svd-base2novel-biomedical")
    assert "BUSI" not in bio.datasets and len(bio.datasets) == 9
    assert bio.published_cell("zero-shot", "average", 16)[1] == {"base": 49.27, "novel": 67.17, "hm": 55.23}
    prolip = get_table("prolip-base2novel-natural")
    assert prolip.published_cell("prolip", "average", 16)[1]["hm"] == 78.61 and prolip.seeds == tuple(range(1, 11))


def test_table_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(ConfigError, match="unknown table 'nope'.*clip-svd-few-shot-natural"):
        get_table("nope")
    data = json.loads(Path(get_table("clip-svd-few-shot-natural").path.replace(
        "clipsvd/reproduce/tables", str(Path(__file__).parents[1] / "clipsvd/reproduce/tables"))).read_text())
    del data["sources"]["readme"]["commit"]
    with pytest.raises(ConfigError, match="broken.json: sources.readme lacks commit"):
        parse_table(data, "broken.json")
    data = json.loads(json.dumps(data).replace('"accuracy"', '"acc"'))
    data["sources"]["readme"]["commit"] = "x"
    with pytest.raises(ConfigError, match=r"published\[0\] \(CLIP-SVD \(Ours\)\).*publishes accuracy"):
        parse_table(data, "broken.json")


# ----------------------------------------------------------------------------- the grid and its dry run


def test_dry_run_lists_the_exact_grid_on_fake_coop_data(tmp_path, coop_root, capsys):
    out = tmp_path / "out"
    code = main(["--runs-dir", str(tmp_path / "runs"), "reproduce", "clip-svd-few-shot-natural", "--data-root",
                 str(coop_root), *TINY_ARGS, "--dataset", "EuroSAT", "--dataset", "dtd", "--shots", "1", "--shots",
                 "4", "--dry-run", "--no-timing", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    records = [json.loads(line) for line in (out / "resolved_configs.jsonl").read_text().splitlines()]
    cells = [(r["method"], r["setting"]["dataset"], r["shots"], r["seed"]) for r in records]
    assert sorted(cells) == sorted(itertools.product(["clip-svd", "zero-shot", "clip-lora", "coop"],
                                                     ["EuroSAT", "DescribableTextures"],
                                                     [1, 4], [1, 2, 3]))
    data = {name: load_dataset(DatasetSpec("coop", name, str(coop_root)))
            for name in ("EuroSAT", "DescribableTextures")}
    for record in records:
        config = ExperimentConfig.from_dict(record)
        assert record["steps"] == planned_steps(config, data[record["setting"]["dataset"]])
        assert config.hyperparameters == {} and config.backbone == "natural" and config.dataset.kind == "coop"
    assert {r["steps"] for r in records if r["method"] == "clip-svd"} == {200, 800}  # the official 200·K
    assert {r["steps"] for r in records if r["method"] == "clip-lora"} == {500, 2000}  # CLIP-LoRA's 500·K
    assert printed.count(" missing ") == 48 and "48 cells (2 datasets × 2 K × 4 methods × 3 seeds)" in printed
    assert "templates=['{} texture.']" in printed  # the official values each cell uses


def test_dry_run_on_fake_biomedcoop_data_marks_absent_datasets(tmp_path, capsys):
    root = biomed_tree(biomed_tree(tmp_path / "Biomed", "BTMRI"), "COVID-QU-Ex")  # COVID_19 under BiomedCoOp's name
    out = tmp_path / "out"
    code = main(["--runs-dir", str(tmp_path / "runs"), "reproduce", "clip-svd-base2novel-biomedical", "--data-root",
                 str(root), *TINY_ARGS, "--dry-run", "--no-timing", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    records = [json.loads(line) for line in (out / "resolved_configs.jsonl").read_text().splitlines()]
    table = get_table("clip-svd-base2novel-biomedical")
    assert len(records) == 9 * 1 * 2 * 3
    assert {r["setting"]["dataset"] for r in records} == set(table.datasets) - {"COVID_19"} | {"COVID-QU-Ex"}
    for record in records:
        config = ExperimentConfig.from_dict(record)
        assert config.protocol == "base2novel" and config.setting().backbone == "biomedical" and config.shots == 16
        found = record["dataset"]["name"] in ("BTMRI", "COVID-QU-Ex")
        data = load_dataset(config.dataset) if found else None
        assert record["steps"] == planned_steps(config, data)
    assert "not found under" in printed and "CHMNIST" in printed.split("not found under")[1]


def test_reproduce_without_a_model_says_which_weights_the_table_expects(tmp_path, capsys):
    code = main(["reproduce", "clip-svd-few-shot-natural", "--data-root", str(tmp_path)])
    assert code == 2 and "--weights /path/ViT-B-16.pt" in capsys.readouterr().err
    code = main(["reproduce", "clip-svd-base2novel-biomedical", "--data-root", str(tmp_path)])
    assert code == 2 and "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224" in capsys.readouterr().err
    assert main(["reproduce", "clip-svd-few-shot-natural", *TINY_ARGS, "--dry-run", "--no-timing", "--shots", "1",
                 "--out", str(tmp_path / "out")]) == 0  # a dry run needs no data: steps from known class counts
    printed = capsys.readouterr().out
    assert "132 cells (11 datasets × 1 K × 4 methods × 3 seeds)" in printed and "no --data-root" in printed
    assert main(["reproduce", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in available_tables()) and "HealthX-Lab/CLIP-SVD@022b1eda02df" in listing


# ----------------------------------------------------------------------------- run, resume, compare


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (1 CPU) for the module: starting it costs ~9 s."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def tiny_table(path: Path) -> Path:
    """A test-only table: EuroSAT alone, 1-shot, seed 1, CLIP-SVD for 2 steps, with published numbers to compare."""
    data = json.loads((Path(__file__).parents[1] / "clipsvd/reproduce/tables/clip-svd-few-shot-natural.json")
                      .read_text())
    data.update(name="tiny-check", datasets=["EuroSAT"], shots=[1], seeds=[1], methods=["clip-svd", "zero-shot"],
                hyperparameters={"clip-svd": {"iterations": 2, "batch_size": 4}})
    data["published"] = [
        {"label": "CLIP-SVD", "method": "clip-svd", "source": "readme", "dataset": "EuroSAT",
         "values": {"1": {"accuracy": 50.0}}},
        {"label": "CLIP-SVD", "method": "clip-svd", "source": "readme", "dataset": "average",
         "values": {"1": {"accuracy": 40.0}}},
    ]
    return write_json(path, data)


def test_two_cell_grid_runs_on_ray_resumes_and_fills_the_comparison(tmp_path, coop_root, local_ray, capsys):
    store, out = RunStore(tmp_path / "runs"), tmp_path / "out"
    argv = ["--runs-dir", str(store.root), "reproduce", str(tiny_table(tmp_path / "tiny.json")), "--data-root",
            str(coop_root), *TINY_ARGS, "--workers", "1", "--device", "cpu", "--max-test-per-class", "2",
            "--out", str(out)]
    assert main(argv) == 0
    first = {run.config["method"]: run for run in store.list()}
    assert set(first) == {"clip-svd", "zero-shot"} and all(r.status == "completed" for r in first.values())
    assert first["clip-svd"].metrics["steps"] == 2 and first["clip-svd"].config["sweep"].startswith("reproduce-")
    capsys.readouterr()

    # A finished cell never runs again; a deleted one does, and so does one whose newest run was cancelled.
    store.delete(first["clip-svd"].run_id)
    cancelled = Run(store.new_run_id("clip-svd", "EuroSAT"), first["clip-svd"].config, {}, status="cancelled")
    store.save(cancelled, {})
    assert main(argv) == 0
    assert "[1/1] clip-svd · EuroSAT" in capsys.readouterr().out
    second = {run.run_id: run for run in store.list() if run.status == "completed"}
    assert first["zero-shot"].run_id in second and first["clip-svd"].run_id not in second
    [rerun] = [r for r in second.values() if r.config["method"] == "clip-svd"]
    assert main(argv) == 0 and "[1/" not in capsys.readouterr().out  # everything done: nothing runs
    assert {r.run_id for r in store.list() if r.status == "completed"} == set(second)

    table = pd.read_csv(out / "measured_vs_published.csv").set_index(["method", "dataset"])
    measured = rerun.metrics["accuracy"]
    assert table.loc[("clip-svd", "EuroSAT"), "accuracy_mean"] == pytest.approx(measured)
    assert table.loc[("clip-svd", "EuroSAT"), "delta_accuracy"] == pytest.approx(measured - 50.0)
    assert table.loc[("clip-svd", "average"), "delta_accuracy"] == pytest.approx(measured - 40.0)
    assert "HealthX-Lab/CLIP-SVD" in table.loc[("clip-svd", "average"), "published_source"]
    assert "not published per dataset" in table.loc[("zero-shot", "EuroSAT"), "note"]
    assert pd.isna(table.loc[("zero-shot", "EuroSAT"), "delta_accuracy"])
    assert (out / "measured_vs_published.html").is_file() and (out / "per_dataset.html").is_file()


def test_base2novel_comparison_reports_both_hm_conventions(tmp_path, coop_root):
    """Fake runs (no training): two datasets × two seeds; the average row's HM of averages and average of HMs."""
    table = get_table("clip-svd-base2novel-natural")
    configs = grid(table, coop_root, TINY, datasets=["EuroSAT", "dtd"], methods=["clip-svd"], seeds=[1, 2])
    scores = {("EuroSAT", 1): (90.0, 60.0), ("EuroSAT", 2): (80.0, 70.0), ("DescribableTextures", 1): (70.0, 40.0),
              ("DescribableTextures", 2): (60.0, 50.0)}
    store = RunStore(tmp_path / "runs")
    for config in configs:
        base, novel = scores[(config.dataset.name, config.seed)]
        store.save(Run(store.new_run_id("clip-svd", config.dataset.name), config_record(config),
                       {"base": base, "novel": novel, "hm": harmonic_mean(base, novel)}), {})
    frame = compare(table, store, configs).set_index(["kind", "method", "dataset"])
    euro = frame.loc[("measured", "clip-svd", "EuroSAT")]
    assert euro["base_mean"] == 85.0 and euro["hm_of_averages"] == pytest.approx(harmonic_mean(85.0, 65.0))
    assert euro["average_of_hms"] == pytest.approx((harmonic_mean(90, 60) + harmonic_mean(80, 70)) / 2)
    assert "not published per dataset" in euro["note"] and pd.isna(euro["published_hm"])
    average = frame.loc[("measured", "clip-svd", "average")]
    assert average["base_mean"] == 75.0 and average["novel_mean"] == 55.0 and average["datasets"] == "2/11"
    assert average["hm_of_averages"] == pytest.approx(harmonic_mean(75.0, 55.0))
    assert average["average_of_hms"] == pytest.approx((harmonic_mean(85, 65) + harmonic_mean(65, 45)) / 2)
    assert average["base_std"] == pytest.approx(pd.Series([80.0, 70.0]).std())  # per-seed averages 80, 70
    assert average["published_hm"] == 80.13 and pd.isna(average["delta_hm"])  # 2 of 11 datasets: no Δ
    assert average["published_hm_convention"] == "hm-of-averages"
    assert ("reference", "", "average") in frame.index  # CLIP-LoRA, CoOp... beside ours
    by_setting = compare(table, store).set_index(["kind", "method", "dataset"])  # no grid: runs matched by setting
    assert by_setting.loc[("measured", "clip-svd", "average"), "hm_of_averages"] == average["hm_of_averages"]
    assert by_setting.loc[("measured", "zero-shot", "average"), "note"].startswith("not measured yet")


# ----------------------------------------------------------------------------- the page


def test_reproduce_page_renders_empty_and_with_a_fake_root(tmp_path, coop_root):
    at = app_at("pages/9_Reproduce.py", tmp_path / "runs")
    assert_clean(at)
    assert any("No data root yet" in i.value for i in at.info)
    assert any("Measured vs published" in s.value for s in at.subheader)
    at = app_at("pages/9_Reproduce.py", tmp_path / "runs", reproduce_data_root=str(coop_root))
    assert not at.exception, [e.value for e in at.exception]
    assert any("Not found under" in w.value and "Caltech101" in w.value for w in at.warning)
    # 4 methods (CLIP-SVD, zero-shot and the runnable CLIP-LoRA and CoOp rows) × 11 datasets × K 1..16 × 3 seeds
    assert [m.value for m in at.metric][:3] == ["660", "0", "660"]
    assert at.button(key="rep-start").label == "Run the 120 missing cells"
