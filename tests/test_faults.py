"""The fault suite: what a shared lab server does to a run store, and what the user sees (issue 22).

- `clipsvd train` SIGKILLed at seeded random points of its training and of its save (every fsync, write and
  rename is a point), the store verified after each: every run folder listed (or listed as damaged), no hidden
  leftover once the store is reopened a day later, and a new run saves.
- A full disk, a read-only store, an immutable store and a store path that is a file fail *before* training, in
  the CLI, sweeps and the dashboard's job creation, with the folder and the reason. As root they are real: a
  loop-mounted 8 MB ext4 image, a read-only bind mount, `chattr +i`; where those cannot be set up (not root, no
  loop device) a fault-injecting fake of the same errno stands in, and the figures say which one ran.
- 3 processes saving into one store at once; a failing delete leaves the run whole; `runs delete ../other/run`
  is refused by name; a damaged metrics.json is listed as damaged and hides nothing.
- Bad inputs: NaN weights, a CLIP-SVD decomposition that fails, a zip whose headers lie, a corpus that is not
  UTF-8, each with its message asserted.
- A Ray worker killed mid-run is recorded as an attempt in the run: tests/test_cluster.py
  (test_a_run_whose_first_worker_was_killed_records_the_attempt), beside the cluster it needs.

Each test prints its figures (pytest -s shows them); benchmarks/bench_faults.py runs the long versions.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import torch

from clipsvd.cli import main
from clipsvd.errors import CheckpointError, DataError, StoreError
from clipsvd.runs import Run, RunStatus, RunStore
from clipsvd.runs import store as store_module

TRAIN_ARGS = ["train", "--method", "clip-svd", "--arch", "clipsvd-tiny", "--weights", "random", "--dataset",
              "animal-shape", "--shots", "2", "--batch-size", "2", "--epochs", "2", "--max-test-per-class", "1",
              "--device", "cpu",
              "--num-workers", "0", "--log-every", "1"]
KILLS = int(os.environ.get("CLIPSVD_FAULT_KILLS", "10"))
DAY = 24 * 3600
REAL_FAULTS = os.geteuid() == 0 and not os.environ.get("CLIPSVD_FAULT_FAKES")  # =1: the fakes, even as root


# ----- helpers: a forked `clipsvd train` that SIGKILLs itself at its k-th event ----------------------------------
def _instrument(on_event) -> None:
    """In a forked child: call `on_event(label)` before every training progress report and every write, fsync and
    rename of the store's save."""
    from clipsvd.cli import train as train_cli

    printer = train_cli.progress_printer

    def progress_printer(every):
        inner = printer(every)

        def report(progress):
            if progress.phase != "load":  # its count depends on CLIP-SVD's decomposition cache: not a fixed point
                on_event(f"progress:{progress.phase}")
            inner(progress)

        return report

    def wrap(name, function):
        def wrapped(*args, **kwargs):
            on_event(name)
            return function(*args, **kwargs)

        return wrapped

    train_cli.progress_printer = progress_printer
    store_module.save_file = wrap("save:adapter", store_module.save_file)
    store_module._write_text = wrap("save:write", store_module._write_text)
    store_module._fsync = wrap("save:fsync", store_module._fsync)
    os.rename = wrap("save:rename", os.rename)


def _forked_train(runs: Path, kill_at: int, events_file: Path | None = None, timeout: float = 120.0) -> int:
    """Run `clipsvd train` in a forked child that SIGKILLs itself before its `kill_at`-th event (0: never); the
    child's exit status (-9 when killed). `events_file` receives the labels of every event of an unkilled run."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            events: list[str] = []

            def on_event(label: str) -> None:
                events.append(label)
                if len(events) == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            _instrument(on_event)
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                code = main(["--runs-dir", str(runs), *TRAIN_ARGS])
            if events_file is not None:
                events_file.write_text(json.dumps(events))
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"clipsvd train did not finish within {timeout:.0f} s")
        time.sleep(0.02)


def age_hidden_leftovers(root: Path, seconds: float = 2 * DAY) -> list[str]:
    """Make every .tmp-/.trash- entry look `seconds` old, as after a day; their names."""
    names = [p.name for p in root.iterdir() if p.name.startswith((store_module.TMP_PREFIX, store_module.TRASH_PREFIX))]
    stamp = time.time() - seconds
    for name in names:
        os.utime(root / name, (stamp, stamp))
    return names


def verify_store(root: Path) -> dict[str, int]:
    """The checks after a fault: every run folder listed (completed or damaged), reopening a day later leaves no
    hidden leftover, and a new run saves. Returns the counts for the figures."""
    folders = {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.is_dir() else set()
    leftovers = age_hidden_leftovers(root) if root.is_dir() else []
    store = RunStore(root)
    runs = store.list()
    assert {r.run_id for r in runs} == folders, "a run folder that the store does not list"
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "hidden leftovers after reopening"
    fresh = store.save(Run(store.new_run_id("probe", "faults"), {"method": "probe"}, {}), {"x": torch.ones(2)})
    assert store.load(fresh.run_id).status == RunStatus.COMPLETED
    store.delete(fresh.run_id)
    return {"runs": len(runs), "damaged": sum(r.status == RunStatus.DAMAGED for r in runs),
            "leftovers_removed": len(leftovers)}


def test_sigkill_at_seeded_points_of_training_and_saving_leaves_the_store_whole(tmp_path):
    runs = tmp_path / "runs"
    events_file = tmp_path / "events.json"
    start = time.perf_counter()
    assert _forked_train(runs, 0, events_file) == 0  # one whole run: its events are the points to kill at
    full_run_s = time.perf_counter() - start
    events = json.loads(events_file.read_text())
    saving = [i + 1 for i, label in enumerate(events) if label.startswith("save:")]
    training = [i + 1 for i, label in enumerate(events) if not label.startswith("save:")]
    rng = random.Random(22)
    half = KILLS // 2  # half the kills in the save (a handful of events), half anywhere before it
    points = sorted(rng.sample(saving, min(half, len(saving))) + rng.sample(training, KILLS - min(half, len(saving))))
    rows = []
    for point in points:
        code = _forked_train(runs, point)
        assert code == -signal.SIGKILL, f"the child was not killed at event {point} ({events[point - 1]})"
        rows.append({"event": point, "at": events[point - 1], **verify_store(runs)})
    print(f"\nSIGKILL of `clipsvd train` (whole run {full_run_s:.1f} s, {len(events)} events, {len(saving)} in the "
          f"save), {len(points)} seeded points:")
    for row in rows:
        print(f"  event {row['event']:>3} {row['at']:<18} runs {row['runs']}  damaged {row['damaged']}  "
              f"leftovers removed {row['leftovers_removed']}")
    print(f"  store intact {len(rows)}/{len(points)}; leftovers removed in total "
          f"{sum(r['leftovers_removed'] for r in rows)}")
    # killed before its rename a save leaves only a hidden folder: the only run is the first, whole one
    assert [r.status for r in RunStore(runs).list()].count(RunStatus.COMPLETED) >= 1
    assert all(r["damaged"] == 0 for r in rows)


# ----- real faults as root, fakes elsewhere ----------------------------------------------------------------------
def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


@contextlib.contextmanager
def read_only_store(root: Path, monkeypatch):
    """`root` on a read-only bind mount of itself (real EROFS as root); else os.open/mkdir faking EROFS under it."""
    root.mkdir(parents=True, exist_ok=True)
    if REAL_FAULTS and _run("mount", "--bind", str(root), str(root)):
        try:
            if _run("mount", "-o", "remount,ro,bind", str(root)):
                yield "read-only bind mount"
                return
        finally:
            _run("umount", str(root))
    with pytest.MonkeyPatch.context() as patch:  # undone when the block ends, as the real fault is
        yield _fake_errno(root, errno.EROFS, patch, "fake EROFS")


@contextlib.contextmanager
def immutable_store(root: Path, monkeypatch):
    """`chattr +i` on the store folder (real EPERM: no entry can be made, renamed or removed); else a fake."""
    if REAL_FAULTS and _run("chattr", "+i", str(root)):
        try:
            yield "chattr +i"
        finally:
            _run("chattr", "-i", str(root))
        return
    with pytest.MonkeyPatch.context() as patch:
        yield _fake_errno(root, errno.EPERM, patch, "fake EPERM")


@contextlib.contextmanager
def small_filesystem(mount: Path, monkeypatch, size_mb: int = 8):
    """A loop-mounted `size_mb` MB ext4 image at `mount` (real ENOSPC); else disk_usage faking that size."""
    mount.mkdir(parents=True)
    image = mount.with_suffix(".img")
    if REAL_FAULTS and shutil.which("mkfs.ext4"):
        with open(image, "wb") as fh:
            fh.truncate(size_mb * 1024 * 1024)
        if _run("mkfs.ext4", "-q", "-F", str(image)) and _run("mount", "-o", "loop", str(image), str(mount)):
            try:
                yield "loop-mounted ext4 image"
            finally:
                _run("umount", str(mount))
                image.unlink()
            return
    usage = shutil.disk_usage(mount)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_module.shutil, "disk_usage",
                      lambda path: usage._replace(free=int(size_mb * 0.7 * 1024 * 1024)))
        yield "fake disk_usage"


def _fake_errno(root: Path, code: int, monkeypatch, name: str) -> str:
    def guard(function):
        def faulty(path, *args, **kwargs):
            if str(os.fspath(path)).startswith(str(root)):
                raise OSError(code, os.strerror(code), str(path))
            return function(path, *args, **kwargs)

        return faulty

    for function in ("open", "mkdir", "rename"):
        monkeypatch.setattr(os, function, guard(getattr(os, function)))
    return name


def _train_refused(runs: Path, monkeypatch, capsys) -> tuple[int, str, float]:
    """`clipsvd train` on `runs` with training itself replaced by a tripwire: (exit code, stderr, seconds)."""
    import clipsvd.training

    def tripwire(*args, **kwargs):
        raise AssertionError("training started on a store that cannot take the run")

    monkeypatch.setattr(clipsvd.training, "run_experiment", tripwire)
    start = time.perf_counter()
    code = main(["--runs-dir", str(runs), *TRAIN_ARGS])
    return code, capsys.readouterr().err, time.perf_counter() - start


def test_a_store_that_cannot_take_the_run_fails_before_training(tmp_path, monkeypatch, capsys):
    figures = []
    disk = tmp_path / "disk"
    with small_filesystem(disk, monkeypatch) as how:
        code, err, seconds = _train_refused(disk / "runs", monkeypatch, capsys)
        assert code == 2 and f"run store {disk / 'runs'}: no space left:" in err and "MB free" in err, err
        assert "MB needed (clipsvd-tiny's parameters in fp32)" in err
        figures.append(("small disk", how, seconds, err.strip()))
        if how.startswith("loop"):  # fill it: the probe's write or fsync itself meets ENOSPC
            for chunk in (1024 * 1024, 1024):  # to the last block: root may use the reserved blocks too
                with contextlib.suppress(OSError), open(disk / f"filler-{chunk}", "wb") as fh:
                    while True:
                        fh.write(b"\0" * chunk)
                        fh.flush()
                        os.fsync(fh.fileno())
            with pytest.raises(StoreError, match="not writable: no space left on device|no space left:"):
                RunStore(disk / "runs").check_writable()
    read_only = tmp_path / "ro"
    with read_only_store(read_only, monkeypatch) as how:
        code, err, seconds = _train_refused(read_only / "runs", monkeypatch, capsys)
        assert code == 2 and f"run store {read_only / 'runs'}: cannot create the folder: read-only file system" \
            in err, err
        figures.append(("read-only store", how, seconds, err.strip()))
    locked = tmp_path / "locked"
    locked.mkdir()
    with immutable_store(locked, monkeypatch) as how:
        code, err, seconds = _train_refused(locked, monkeypatch, capsys)
        assert code == 2 and f"run store {locked} is not writable: operation not permitted" in err, err
        figures.append(("immutable store", how, seconds, err.strip()))
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    code, err, seconds = _train_refused(a_file, monkeypatch, capsys)
    assert code == 2 and f"run store {a_file}: the path is a file, not a folder" in err
    figures.append(("store path is a file", "real", seconds, err.strip()))
    print("\nstores that cannot take a run, refused before training:")
    for what, how, seconds, message in figures:
        print(f"  {what:<22} ({how}): {seconds * 1000:.0f} ms · {message}")


def test_sweeps_and_dashboard_jobs_check_the_store_first(tmp_path, monkeypatch):
    from clipsvd.training.jobs import JobRegistry
    from clipsvd.training.sweep import Launch, run_configs
    from tests.test_sweep import tiny_grid

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    configs = tiny_grid(methods=["clip-svd"], seeds=[1]).configs("s")
    ray = pytest.importorskip("ray")
    started = ray.is_initialized()
    with pytest.raises(StoreError, match=f"run store {a_file}: the path is a file"):
        run_configs(configs, RunStore(a_file), Launch())
    assert ray.is_initialized() == started  # refused before Ray started
    registry = JobRegistry(runner=lambda *a, **k: pytest.fail("a job ran on a store that cannot take it"))
    with pytest.raises(StoreError, match=f"run store {a_file}: the path is a file"):
        registry.submit(configs, RunStore(a_file))
    assert registry.list() == []  # no job was created: the page shows the message instead


# ----- concurrent writers, delete, damage -----------------------------------------------------------------------
def test_three_processes_saving_into_one_store(tmp_path):
    root, per_process = tmp_path / "runs", 8
    start = time.perf_counter()
    children = []
    for worker in range(3):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                store = RunStore(root)
                for i in range(per_process):
                    store.save(Run(store.new_run_id("clip-svd", f"w{worker}"), {"method": "clip-svd", "worker": worker,
                                                                                 "i": i}, {"accuracy": i}),
                               {"sigma": torch.full((64,), float(worker))})
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    seconds = time.perf_counter() - start
    runs = RunStore(root).list()
    print(f"\n3 processes × {per_process} saves into one store: {len(runs)} runs, "
          f"{len({r.run_id for r in runs})} unique ids, {seconds:.2f} s")
    assert codes == [0, 0, 0] and len(runs) == 3 * per_process == len({r.run_id for r in runs})
    assert all(r.status == RunStatus.COMPLETED for r in runs)
    for run in runs:  # each run holds its own writer's tensors
        assert torch.equal(run.adapter_tensors()["sigma"], torch.full((64,), float(run.config["worker"])))


def _saved(store: RunStore, method: str = "clip-svd") -> Run:
    return store.save(Run(store.new_run_id(method, "animal-shape"), {"method": method}, {"accuracy": 50.0}),
                      {"sigma": torch.ones(3)})


def test_delete_is_confined_to_the_store_and_a_failing_delete_keeps_the_run(tmp_path, monkeypatch, capsys):
    store = RunStore(tmp_path / "runs")
    run = _saved(store)
    other = RunStore(tmp_path / "other")
    outside = _saved(other)
    traversal = f"../other/{outside.run_id}"
    assert main(["--runs-dir", str(store.root), "runs", "delete", traversal]) == 2
    assert f"run id '{traversal}' is not a run of this store" in capsys.readouterr().err
    assert [r.run_id for r in other.list()] == [outside.run_id]  # untouched
    for bad in ("/etc", "..", ".trash-x", "a\\b"):
        with pytest.raises(StoreError, match="is not a run of this store"):
            store.delete(bad)
    files = sorted(p.name for p in run.path.iterdir())
    with immutable_store(store.root, monkeypatch) as how:
        with pytest.raises(StoreError, match=f"cannot delete run {run.run_id} from .*: .*; the run is unchanged"):
            store.delete(run.run_id)
    assert sorted(p.name for p in run.path.iterdir()) == files and store.load(run.run_id).metrics["accuracy"] == 50.0
    store.delete(run.run_id)
    assert store.list() == [] and not list(store.root.iterdir())
    print(f"\nfailing delete ({how}): the run kept its {len(files)} files; `runs delete {traversal}` refused")


def test_a_damaged_run_is_listed_as_damaged_and_hides_nothing(tmp_path, capsys):
    store = RunStore(tmp_path)
    good, empty, garbled, no_id = _saved(store), _saved(store), _saved(store), _saved(store)
    (empty.path / "metrics.json").write_bytes(b"")  # what a power loss before an fsync leaves
    (garbled.path / "config.json").write_bytes(b'{"a": "\xff"}')
    (no_id.path / "run.json").write_text("[]")
    runs = {r.run_id: r for r in store.list()}
    assert runs[good.run_id].status == RunStatus.COMPLETED and len(runs) == 4
    assert runs[empty.run_id].status == RunStatus.DAMAGED
    assert runs[empty.run_id].message == "metrics.json: empty (0 bytes; an interrupted write)"
    assert runs[garbled.run_id].message.startswith("config.json: not UTF-8 text (byte 7)")
    assert runs[no_id.run_id].message == "run.json: expected a JSON object, found list"
    assert list(store.table()["status"]).count(RunStatus.DAMAGED) == 3
    assert main(["--runs-dir", str(tmp_path), "runs", "list"]) == 0
    out = capsys.readouterr().out
    assert good.run_id in out and f"damaged: {empty.run_id}: metrics.json: empty" in out
    with pytest.raises(DataError, match="metrics.json: empty"):
        store.load(empty.run_id)
    store.delete(empty.run_id)  # a damaged run can be removed
    assert empty.run_id not in {r.run_id for r in store.list()}


def test_stale_leftovers_go_when_a_store_opens_and_fresh_ones_stay(tmp_path):
    store = RunStore(tmp_path)
    run = _saved(store)
    for name in (".tmp-old-run-abc", ".trash-old-run-def", ".tmp-live-run-123"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text("{}")
    age_hidden_leftovers(tmp_path)
    os.utime(tmp_path / ".tmp-live-run-123")  # a save under way in another process right now
    RunStore(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".tmp-live-run-123", run.run_id])


# ----- bad inputs, each with its message -------------------------------------------------------------------------
def test_weights_with_nan_are_refused_at_load_naming_the_tensor(tmp_path, tiny):
    from clipsvd.models import ModelSpec, load_model
    from clipsvd.models.loading import save_checkpoint

    name = "visual.transformer.resblocks.0.attn.in_proj_weight"
    with torch.no_grad():
        tiny.model.get_parameter(name)[3, 4] = float("nan")
    path = save_checkpoint(tiny.model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match=f"checkpoint {path}: tensor '{name}' holds NaN \\(1 of 12288 values\\)"):
        load_model(ModelSpec("clipsvd-tiny", str(path)), "cpu")
    with torch.no_grad():
        tiny.model.get_parameter(name)[3, 4] = float("inf")
    path = save_checkpoint(tiny.model, tmp_path / "inf.safetensors")
    with pytest.raises(CheckpointError, match=f"tensor '{name}' holds Inf"):
        load_model(ModelSpec("clipsvd-tiny", str(path)), "cpu")


def test_clip_svd_on_a_matrix_it_cannot_decompose_says_which(tiny):
    from clipsvd.methods import create_method
    from clipsvd.methods.clip_svd import CLIPSVDConfig

    name = "visual.transformer.resblocks.0.attn.in_proj_weight"
    with torch.no_grad():
        tiny.model.get_parameter(name)[0, 0] = float("nan")  # in memory: the loader would have refused the file
    method = create_method("clip-svd", CLIPSVDConfig())
    with pytest.raises(CheckpointError, match=f"CLIP-SVD cannot decompose {name} .*non-finite"):
        method.attach(tiny, [["a photo of a cat."], ["a photo of a dog."]])


def test_a_zip_whose_headers_lie_leaves_no_partial_extraction(tmp_path):
    from clipsvd.data.uploads import extract_zip

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("pets/cat/1.png", b"a" * 1000)
        archive.writestr("pets/dog/1.png", b"b" * 1000)
    lying = buffer.getvalue().replace(b"b" * 10, b"c" * 10, 1)  # the data no longer matches its header's CRC
    with pytest.raises(DataError, match="entry 'pets/dog/1.png' cannot be unpacked: its headers do not match its "
                                        "data \\(Bad CRC-32.*nothing was extracted"):
        extract_zip(lying, tmp_path / "upload" / "zip-1")
    assert list((tmp_path / "upload").iterdir()) == []  # neither the first entry nor a staging folder


def test_a_corpus_that_is_not_utf8_is_refused_with_the_byte_offset(tmp_path):
    from clipsvd.analysis import load_corpus, parse_corpus

    data = "a red cube\nune forme bleue\n".encode("utf-8") + "café\n".encode("latin-1")
    with pytest.raises(DataError, match="corpus mine.txt is not UTF-8 text \\(invalid continuation byte at byte 30\\)"):
        parse_corpus(data, "mine.txt")
    (tmp_path / "mine.txt").write_bytes(data)
    with pytest.raises(DataError, match=f"corpus file {tmp_path / 'mine.txt'} is not UTF-8 text .* at byte 30"):
        load_corpus(tmp_path / "mine.txt")
    assert parse_corpus("a red cube\n".encode(), "ok.txt") == ["a red cube"]
