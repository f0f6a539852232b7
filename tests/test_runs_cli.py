import io
import json
import zipfile

import pytest
import torch

from clipsvd.cli import main
from clipsvd.errors import DataError
from clipsvd.runs import Run, RunStore


def make_run(store: RunStore, method: str = "clip-svd") -> Run:
    run = Run(store.new_run_id(method, "animal-shape"), {"method": method, "dataset": {"name": "animal-shape"}},
              {"accuracy": 50.0}, history=[{"epoch": 1, "loss": 1.0}])
    return store.save(run, {"sigma": torch.ones(3)})


def test_store_save_list_load_delete_bundle(tmp_path):
    store = RunStore(tmp_path)
    first, second = make_run(store), make_run(store, "clipfit")
    assert {r.run_id for r in store.list()} == {first.run_id, second.run_id}
    assert list(store.table()["method"]).count("clipfit") == 1
    loaded = store.load(first.run_id)
    assert loaded.metrics["accuracy"] == 50.0 and loaded.history == [{"epoch": 1, "loss": 1.0}]
    assert torch.equal(loaded.adapter_tensors()["sigma"], torch.ones(3))
    names = zipfile.ZipFile(io.BytesIO(store.bundle(first.run_id))).namelist()
    assert f"{first.run_id}/adapter.safetensors" in names and f"{first.run_id}/config.json" in names
    store.delete(first.run_id)
    assert [r.run_id for r in store.list()] == [second.run_id]
    with pytest.raises(DataError, match="no run"):
        store.load(first.run_id)


def test_store_ignores_half_written_runs_and_names_corrupt_files(tmp_path):
    store = RunStore(tmp_path)
    run = make_run(store)
    (tmp_path / ".tmp-crashed-run").mkdir()
    assert [r.run_id for r in store.list()] == [run.run_id]
    (run.path / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="metrics.json"):
        store.load(run.run_id)
    (run.path / "metrics.json").write_text("{}")
    (run.path / "history.jsonl").write_text('{"epoch": 1}\n{not json\n')
    with pytest.raises(DataError, match="history.jsonl, line 2"):
        store.load(run.run_id)
    (run.path / "history.jsonl").unlink()
    with pytest.raises(DataError, match="history.jsonl: missing"):
        store.load(run.run_id)


def test_cli_train_list_show_eval(tmp_path, capsys):
    runs = str(tmp_path)
    code = main(["--runs-dir", runs, "train", "--method", "clip-svd", "--arch", "clipsvd-tiny", "--shots", "1",
                 "--epochs", "1", "--max-test-per-class", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "completed: accuracy" in out and "untrained" in out
    run_id = RunStore(runs).list()[0].run_id
    assert main(["--runs-dir", runs, "runs", "list"]) == 0 and run_id in capsys.readouterr().out
    assert main(["--runs-dir", runs, "runs", "show", run_id]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["method"] == "clip-svd"
    assert main(["--runs-dir", runs, "eval", run_id, "--max-test-per-class", "2", "--device", "cpu"]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out)


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    code = main(["--runs-dir", str(tmp_path), "train", "--method", "nope", "--arch", "clipsvd-tiny"])
    assert code == 2 and "method: 'nope' is unknown" in capsys.readouterr().err
    code = main(["--runs-dir", str(tmp_path), "train", "--method", "clip-svd", "--arch", "clipsvd-tiny",
                 "--dataset-kind", "imagefolder", "--dataset", "mine", "--data-root", str(tmp_path / "missing")])
    assert code == 2 and "missing" in capsys.readouterr().err


def test_cli_analyze_writes_tables_and_figures(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["--runs-dir", runs, "train", "--method", "clip-svd", "--arch", "clipsvd-tiny", "--shots", "1",
                 "--epochs", "1", "--lr", "0.05", "--max-test-per-class", "2", "--device", "cpu"]) == 0
    run_id = RunStore(runs).list()[0].run_id
    out = tmp_path / "analysis"
    code = main(["--runs-dir", runs, "analyze", run_id, "--out", str(out), "--what", "sv", "heads", "textspan",
                 "--images-per-class", "3", "--texts-per-head", "3", "--top-heads", "1", "--device", "cpu"])
    assert code == 0
    import pandas as pd

    shifts = pd.read_csv(out / "sv_shifts.csv")
    assert len(shifts) == 2 * 2 * 6 and (shifts["rel_change"] > 0).all()
    assert len(pd.read_csv(out / "heads.csv")) == 2 * 2
    texts = pd.read_csv(out / "textspan_after.csv")
    assert texts.groupby(["layer", "head"]).size().eq(3).all()
    assert "<html>" in (out / "sv_shifts.html").read_text()[:200].lower()
    assert len(list(out.glob("textspan_L*H*.html"))) == 1
