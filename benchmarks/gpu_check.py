"""Every CUDA path of clipsvd once, on one GPU, in under 10 minutes: a pass/fail table with numbers.

    python benchmarks/gpu_check.py [--only NAME ...] [--skip-slow]

Checks (each a small function registered in CHECKS, run in order, sharing a context):
  attach          CLIP-SVD attaches on CUDA (ViT-B/16 shapes, decomposing), then again from the decomposition cache
  step/...        one step of each CLIP-SVD path (auto, factored, recomposed) × lean_memory × fp32 / fp16 with a
                  GradScaler / bf16: σ-gradients finite, float32, and within tolerance of the fp32 auto step
  experiment/...  a short run_experiment of every method at precision=auto (fp16 on CUDA), on the world model
  analyses        on a CUDA-restored CLIP-SVD run: σ shifts, head rankings, TextSpan on 64 images, the direct
                  decomposition summing to the embedding, UMAP
  job+analysis    a dashboard job in its thread while an analysis runs beside it
  ray             4 Ray GPU tasks (¼ GPU each, max_calls=1): pid, CUDA_VISIBLE_DEVICES, memory
  bench/fp16, bench/bf16  benchmarks/bench_clip_svd_step.py on CUDA (ratios to the official form)
Exits 1 if any check fails; without a GPU it prints one line and exits 0.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
STEP_ARCH, STEP_BATCH = "ViT-B-16", 8  # the step checks' shapes; the experiments use the small world CLIP
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2, "bf16": 1e-1}  # σ-gradient relative error vs the fp32 auto step
SKIP_LINE = "gpu_check: skipped, no CUDA device (torch.cuda.is_available() is False)"


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Check:
    name: str
    run: Callable[[dict], str]  # returns the numbers to report; raises (AssertionError or any error) to fail
    slow: bool = False


CHECKS: list[Check] = []


def check(name: str, slow: bool = False) -> Callable:
    def register(function: Callable[[dict], str]) -> Callable[[dict], str]:
        CHECKS.append(Check(name, function, slow))
        return function
    return register


def run_checks(checks: list[Check], context: dict, on_result: Callable[[Result], None] = lambda r: None) -> list[Result]:
    """Each check in order; an exception fails that check only (its type and message become the detail)."""
    results = []
    for item in checks:
        start = time.perf_counter()
        try:
            detail, ok = item.run(context), True
        except Exception as exc:  # noqa: BLE001 - a failed check is reported, the others still run
            detail, ok = f"{type(exc).__name__}: {exc}".strip(), False
        result = Result(item.name, ok, time.perf_counter() - start, " ".join(str(detail).split()))
        results.append(result)
        on_result(result)
    return results


def report_table(results: list[Result]) -> str:
    """The table printed at the end: check, pass/FAIL, seconds, numbers (or the error)."""
    frame = pd.DataFrame([{"check": r.name, "result": "pass" if r.ok else "FAIL", "seconds": f"{r.seconds:.1f}",
                           "numbers / error": r.detail} for r in results],
                         columns=["check", "result", "seconds", "numbers / error"])
    with pd.option_context("display.max_colwidth", 140, "display.width", 250):
        text = frame.to_string(index=False) if len(frame) else "(no checks ran)"
    failed = sum(not r.ok for r in results)
    return f"{text}\n{len(results) - failed} passed, {failed} failed"


def exit_code(results: list[Result]) -> int:
    return 0 if results and all(r.ok for r in results) else 1


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _memory() -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB peak"


# ----- checks -----------------------------------------------------------------------------------------------

@check("attach")
def attach_twice(ctx: dict) -> str:
    from clipsvd.methods import create_method
    from clipsvd.models import ModelSpec, load_model

    prompts = [f"a photo of a class {i}." for i in range(10)]
    times, methods = [], []
    for _ in range(2):  # the first decomposes (fresh cache folder), the second reads the decomposition cache
        loaded = load_model(ModelSpec(STEP_ARCH), "cuda")
        start = time.perf_counter()
        methods.append(create_method("clip-svd").attach(loaded, prompts))
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    sigmas = [torch.cat([p.flatten() for p in m.trainable_parameters()]) for m in methods]
    assert all(p.is_cuda for p in methods[1].trainable_parameters()), "σ not on CUDA"
    error = _relative(sigmas[1], sigmas[0])
    assert error < 1e-6, f"σ₀ from the cache differs from the decomposition by {error:.1e}"
    ctx["step_method"], ctx["prompts"] = methods[1], prompts
    return f"decompose {times[0]:.1f} s, from cache {times[1]:.1f} s, σ₀ rel. diff {error:.1e}, {_memory()}"


def _sigma_grads(method, prompts: list[str], precision: str, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """σ-gradients of one step in `precision` (fp16 through a GradScaler, unscaled before reading)."""
    import torch.nn.functional as F

    params = method.trainable_parameters()
    optimizer = torch.optim.SGD(params, lr=0.0)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    optimizer.zero_grad(set_to_none=True)
    method.model.train()
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        loss = F.cross_entropy(method.logits(images, method.class_weights(prompts)).float(), labels)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grads = [p.grad for p in params]
    assert all(g is not None and g.dtype == torch.float32 for g in grads), "σ-gradient missing or not float32"
    return torch.cat([g.flatten() for g in grads])


def _step_check(path: str, lean: bool, precision: str) -> Callable[[dict], str]:
    def run(ctx: dict) -> str:
        method = ctx.get("step_method")
        if method is None:
            raise RuntimeError("needs the model of check attach (run it first)")
        if "batch" not in ctx:
            generator = torch.Generator().manual_seed(0)
            size = method.loaded.image_size
            ctx["batch"] = (torch.randn(STEP_BATCH, 3, size, size, generator=generator).cuda(),
                            torch.randint(0, 10, (STEP_BATCH,), generator=generator).cuda())
        method.set_path(path)
        for svw in method.singular_value_weights().values():
            svw.lean_memory = lean
        torch.cuda.reset_peak_memory_stats()
        try:
            grads = _sigma_grads(method, ctx["prompts"], precision, *ctx["batch"])
        finally:
            method.set_path("auto")
        assert torch.isfinite(grads).all(), "non-finite σ-gradient"
        reference = ctx.setdefault("reference_grads", grads)  # the first step check: auto, fp32
        error = _relative(grads, reference)
        assert error <= TOLERANCE[precision], f"σ-gradient rel. error {error:.2e} > {TOLERANCE[precision]:g}"
        return f"σ-grad rel. error vs fp32 {error:.2e} (≤ {TOLERANCE[precision]:g}), {_memory()}"
    return run


for _path in ("auto", "factored", "recomposed"):
    for _lean in (False, True):
        for _precision in ("fp32", "fp16", "bf16"):
            CHECKS.append(Check(f"step/{_path}/{'lean' if _lean else 'plain'}/{_precision}",
                                _step_check(_path, _lean, _precision)))


def _experiment_config(method: str, device: str = "cuda"):
    from clipsvd.models import ModelSpec
    from clipsvd.training import ExperimentConfig

    hyperparameters: dict[str, Any] = {"precision": "auto", "epochs": 1}
    if method == "prolip":
        hyperparameters["cached_views"] = 5
    return ExperimentConfig(method=method, model=ModelSpec.default(), shots=2, seed=1, device=device,
                            hyperparameters=hyperparameters, max_test_per_class=4)


def _experiment_check(method: str) -> Callable[[dict], str]:
    def run(ctx: dict) -> str:
        from clipsvd.runs import RunStatus, RunStore
        from clipsvd.training import run_experiment

        store = RunStore(ctx["runs"])
        run = run_experiment(_experiment_config(method, ctx.get("device", "cuda")), store)
        assert run.status == RunStatus.COMPLETED, f"{run.status}: {run.message}"
        ctx.setdefault("runs_by_method", {})[method] = run
        return (f"{run.metrics.get('precision')}, {run.metrics['steps']} steps in {run.metrics['train_seconds']:.1f} s, "
                f"accuracy {run.metrics.get('accuracy', float('nan')):.1f}%")
    return run


def _register_experiments() -> None:
    from clipsvd.methods import available_methods

    for name in available_methods():  # every registered method, so a new one is checked too
        CHECKS.append(Check(f"experiment/{name}", _experiment_check(name)))


_register_experiments()


def _analysis(ctx: dict) -> str:
    from clipsvd.analysis import head_changes, load_corpus
    from clipsvd.analysis.decomposition import direct_contributions
    from clipsvd.analysis.run_pair import analysis_images, image_batches, load_run_pair, run_sv_shifts, run_textspan, run_umap

    run = ctx.get("runs_by_method", {}).get("clip-svd")
    if run is None:
        raise RuntimeError("needs the run of check experiment/clip-svd (run it first)")
    device = ctx.get("device", "cuda")  # "cpu" only to try the check's own code on a machine without a GPU
    pair = load_run_pair(run, device)
    assert next(pair.method.model.parameters()).device.type == device, f"restored model not on {device}"
    shifts = run_sv_shifts(pair)
    heads = head_changes(pair.before, pair.method, "visual")
    classes = len(analysis_images(run, 1).classnames)
    images = analysis_images(run, math.ceil(64 / classes))
    before, after = run_textspan(pair, images, load_corpus("general")[:200], None, 3)
    batch = next(iter(image_batches(images, pair.before, batch_size=64)))[0].to(device)
    parts = direct_contributions(pair.method, batch)
    error = _relative(parts.heads.sum((1, 2)) + parts.rest, parts.embedding)
    assert error < 1e-4, f"decomposition misses the embedding by {error:.1e}"
    layout = run_umap(pair, images)
    return (f"{len(shifts)} σ shift rows, {len(heads)} heads, TextSpan {len(after.frame())} rows on "
            f"{len(images.test)} images, decomposition rel. error {error:.1e}, UMAP {len(layout)} points")


@check("analyses")
def analyses(ctx: dict) -> str:
    return _analysis(ctx)


@check("job+analysis")
def job_beside_analysis(ctx: dict) -> str:
    from clipsvd.runs import RunStatus, RunStore
    from clipsvd.training.jobs import JobRegistry

    registry = JobRegistry()
    job = registry.submit([_experiment_config("clip-svd", ctx.get("device", "cuda"))], RunStore(ctx["runs"]))
    detail = _analysis(ctx)  # in this thread while the job trains in its own
    state = registry.wait(job, timeout=300)
    assert state is not None and state.status == RunStatus.COMPLETED, f"job {state.status if state else '?'}: {state.error if state else ''}"
    return f"job {state.status} ({len(state.run_ids)} run) beside: {detail.split(',')[0]}"


def _probe() -> dict:
    """One Ray GPU task: which process, which GPU it sees, what it can allocate."""
    x = torch.ones(256, 2**20, device="cuda")  # 1 GiB
    free, total = torch.cuda.mem_get_info()
    del x
    return {"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "allocated_gib": torch.cuda.max_memory_allocated() / 2**30, "free_gib": free / 2**30}


@check("ray")
def ray_gpu_tasks(ctx: dict) -> str:
    import ray

    from clipsvd.training.sweep import Placement, remote_task

    assert remote_task(Placement(0.25, 1, 4), {})._max_calls == 1, "GPU tasks would share a worker"
    ray.init(address="local", num_gpus=1, num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        probe = ray.remote(num_gpus=0.25, num_cpus=1, max_calls=1)(_probe)
        rows = ray.get([probe.remote() for _ in range(4)], timeout=300)
    finally:
        ray.shutdown()
    assert all(r["visible"] not in (None, "") for r in rows), "a task saw no CUDA_VISIBLE_DEVICES"
    pids = {r["pid"] for r in rows}
    return "; ".join(f"pid {r['pid']} GPU {r['visible']} {r['allocated_gib']:.2f} GiB" for r in rows) + \
        f"; {len(pids)} distinct workers"


def _bench(precision: str) -> Callable[[dict], str]:
    def run(ctx: dict) -> str:
        command = [sys.executable, str(ROOT / "benchmarks" / "bench_clip_svd_step.py"), "--device", "cuda",
                   "--arch", "ViT-B-16", "--batch", "32", "--precision", precision, "--warmup", "2", "--rounds", "3",
                   "--variants", "ours,official,frozen"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, (done.stderr.strip().splitlines() or ["no output"])[-1]
        numbers = re.findall(r"\[(?:ratio|exactness)\] (.*)", done.stdout)
        return "; ".join(numbers)
    return run


CHECKS.append(Check("bench/fp16", _bench("fp16"), slow=True))
CHECKS.append(Check("bench/bf16", _bench("bf16"), slow=True))


# ----- main -------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, help="run the checks whose names start with these")
    parser.add_argument("--skip-slow", action="store_true", help="leave out the step benchmarks")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        os.environ["CLIPSVD_CACHE"] = str(Path(scratch) / "cache")  # the first attach decomposes
        context: dict[str, Any] = {"runs": Path(scratch) / "runs"}
        wanted = [c for c in CHECKS if not (args.skip_slow and c.slow)
                  and (args.only is None or any(c.name.startswith(o) for o in args.only))]
        print(f"gpu_check on {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
        results = run_checks(wanted, context, lambda r: print(
            f"  {'pass' if r.ok else 'FAIL'} {r.name} ({r.seconds:.1f} s) {r.detail}", flush=True))
    print(report_table(results))
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
