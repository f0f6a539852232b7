"""CUDA paths checked on the CPU where the failure can be shown there: bf16 autocast stands in for CUDA's fp16,
Ray's max_calls is read back from the remote function, memory peaks are counted tensor by tensor."""
import torch

from clipsvd.methods import create_method
from clipsvd.methods.clip_svd import FactoredProjection
from tests.conftest import PROMPTS


def test_evaluation_cache_under_autocast_keeps_the_full_precision_weight(tiny, images):
    """σ changes, the first no-grad forward runs under (bf16) autocast: the cached W must stay float32, so a later
    float32 forward and merge() see float32 weights (before: 'self and mat2 must have the same dtype')."""
    method = create_method("clip-svd").attach(tiny, PROMPTS)
    with torch.no_grad():
        for sigma in method.trainable_parameters():
            sigma.mul_(1.05)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            method.logits(images, method.class_weights(PROMPTS))
        assert all(svw._cache[1].dtype == torch.float32 for svw in method.singular_value_weights().values())
        fp32 = method.logits(images, method.class_weights(PROMPTS))
    assert fp32.dtype == torch.float32
    model = method.merge()
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_lean_memory_under_autocast_keeps_the_half_precision_input():
    """With recompute, backward keeps x; under autocast the half-precision copy the matmul used (half the bytes)
    instead of the float32 LayerNorm output."""
    x = torch.randn(4, 16, 32, requires_grad=True)
    vh, us = torch.randn(96, 32), [torch.randn(32, 32) for _ in "qkv"]
    sigma = torch.rand(96).add_(0.5).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = FactoredProjection.apply(x, vh, sigma, None, True, False, *us)
    big = [t for t in saved if t.numel() == x.numel()]
    assert big and all(t.dtype == torch.bfloat16 for t in big)
    sum(o.float().sum() for o in outputs).backward()
    assert torch.isfinite(sigma.grad).all() and x.grad.dtype == torch.float32


def test_ray_gpu_tasks_get_a_fresh_worker_each():
    """max_calls=1 for GPU tasks (a worker that initialised CUDA ignores the next task's CUDA_VISIBLE_DEVICES);
    CPU tasks keep reusing workers (max_calls=0: unlimited). Read back from the remote function Ray builds."""
    from clipsvd.training.sweep import Placement, remote_task

    assert remote_task(Placement(gpus=0.5, cpus=2, slots=2), {})._max_calls == 1
    assert remote_task(Placement(gpus=0, cpus=2, slots=2), {})._max_calls == 0
    # the scheduler retries (a run records its attempts), not Ray
    assert remote_task(Placement(gpus=1, cpus=2, slots=2), {})._default_options["max_retries"] == 0


class LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the bytes of the tensors created inside it while they live, and their peak: a device-independent
    stand-in for torch.cuda.max_memory_allocated (storages are counted once, however many views they have)."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self.seen = 0, 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        import weakref

        out = func(*args, **(kwargs or {}))
        for tensor in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in self.seen:
                key, size = tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()
                self.seen.add(key)
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self._release, key, size)
        return out

    def _release(self, key, size):
        self.seen.discard(key)
        self.live -= size


def test_cached_view_features_peak_once_in_the_autocast_dtype(monkeypatch):
    """ProLIP's cached views: one preallocated tensor, in bf16 under bf16 autocast: the peak is about one copy of
    the half-precision features (before: fp32 views in a list, then their torch.stack copy: twice that and more)."""
    import types

    import clipsvd.training.cached_views as cached_views
    from clipsvd.training.precision import MixedPrecision

    n, d, views = 40, 256, 60  # features dominate the per-batch temporaries (~0.2 MB)
    split = types.SimpleNamespace(labels=[i % 4 for i in range(n)])
    monkeypatch.setattr(cached_views, "TransformedSplit",
                        lambda split, transform: [(torch.randn(3, 8, 8), label) for label in split.labels])
    projection = torch.randn(3 * 8 * 8, d)
    backbone = lambda images: torch.nn.functional.layer_norm(images.flatten(1) @ projection, (d,))  # fp32 out
    with LiveBytes() as counter:
        features, labels = cached_views.cache_view_features(
            backbone, split, None, views, 0, torch.device("cpu"), MixedPrecision("bf16", torch.device("cpu")),
            lambda progress: None, None)
    one_copy = views * n * d * 2
    assert features.shape == (views, n, d) and features.dtype == torch.bfloat16 and labels.shape == (n,)
    assert counter.peak <= one_copy * 1.3, (counter.peak, one_copy)


def test_training_batches_are_the_same_with_0_and_2_loader_workers():
    """Augmentation seeded per image by the sampler (main process): worker processes change nothing, two epochs
    differ from each other, and the transforms pickle (what a spawned worker needs)."""
    import pickle

    from clipsvd.data import DatasetSpec, few_shot, load_dataset, train_transform
    from clipsvd.data.batches import training_loader

    split = few_shot(load_dataset(DatasetSpec("builtin", "animal-shape")).train, 1, seed=1)
    transform = train_transform(32)
    pickle.loads(pickle.dumps(transform))

    def two_epochs(workers: int) -> list[torch.Tensor]:
        loader = training_loader(split, transform, 4, seed=3, device=torch.device("cpu"), num_workers=workers)
        return [torch.cat([images.flatten(), labels.float()]) for _ in range(2) for images, labels in loader]

    in_process, workers = two_epochs(0), two_epochs(2)
    assert len(in_process) == len(workers) == 2 * -(-len(split) // 4)
    assert all(torch.equal(a, b) for a, b in zip(in_process, workers))
    half = len(in_process) // 2
    assert not torch.equal(in_process[0], in_process[half])  # fresh order and augmentation every epoch


def test_num_workers_is_an_experiment_field_with_a_default_by_device():
    import dataclasses

    from clipsvd.data.batches import MAX_DEFAULT_WORKERS, default_num_workers
    from clipsvd.errors import ConfigError
    from clipsvd.training import ExperimentConfig

    field = {f.name: f for f in dataclasses.fields(ExperimentConfig)}["num_workers"]
    assert field.default is None and "pinned memory" in field.metadata["help"]
    assert default_num_workers(torch.device("cpu")) == 0
    assert 0 <= default_num_workers(torch.device("cuda")) <= MAX_DEFAULT_WORKERS
    try:
        ExperimentConfig(method="zero-shot", num_workers=-1).validate()
    except ConfigError as exc:
        assert "num_workers" in str(exc)
    else:
        raise AssertionError("negative num_workers accepted")


def test_a_job_gives_cuda_memory_back_and_explains_out_of_memory(tmp_path, monkeypatch):
    """torch.cuda.empty_cache after every dashboard job; an out-of-memory error fails the job with what to do."""
    from clipsvd.runs import RunStatus, RunStore
    from clipsvd.training import ExperimentConfig
    from clipsvd.training.jobs import JobRegistry

    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))

    def out_of_memory(config, store, on_progress=None, cancel=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    registry = JobRegistry(runner=out_of_memory)
    state = registry.wait(registry.submit([ExperimentConfig(method="zero-shot")], RunStore(tmp_path)), timeout=30)
    assert state.status == RunStatus.FAILED and "ran out of memory" in state.error and "batch size" in state.error
    assert "Tried to allocate" in state.error_detail and emptied == [True]


def test_dashboard_model_caches_key_one_name_per_device(monkeypatch):
    """'auto' and 'cpu' (and on a GPU 'auto', 'cuda', 'cuda:0') name one device: one cached model, not two."""
    from clipsvd.app import caches

    assert caches.device_key("auto") == caches.device_key("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert caches.device_key("auto") == caches.device_key("cuda") == caches.device_key("cuda:0") == "cuda:0"
    assert caches.device_key("cuda:1") == "cuda:1"


def _gpu_check():
    import importlib
    import sys

    sys.path.insert(0, "benchmarks")
    try:
        return importlib.import_module("gpu_check")
    finally:
        sys.path.remove("benchmarks")


def test_gpu_check_skips_in_one_line_without_a_gpu():
    """No CUDA here: the script says so in one line and exits 0 (so CI runs it and it cannot rot)."""
    import subprocess
    import sys

    if torch.cuda.is_available():
        import pytest
        pytest.skip("a GPU is present: run benchmarks/gpu_check.py itself")
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == _gpu_check().SKIP_LINE


def test_gpu_check_registry_and_report():
    """Every CUDA path named in the issue has a check; a raising check fails alone, with its error in the table,
    and the exit code says whether all passed."""
    from clipsvd.methods import available_methods

    gpu_check = _gpu_check()
    names = [c.name for c in gpu_check.CHECKS]
    steps = [n for n in names if n.startswith("step/")]
    assert len(steps) == 3 * 2 * 3 and "step/recomposed/lean/fp16" in steps
    assert {f"experiment/{m}" for m in available_methods()} <= set(names)
    assert names.index("attach") < names.index(steps[0]) and names.index("experiment/clip-svd") < names.index("analyses")
    assert {"analyses", "job+analysis", "ray", "bench/fp16", "bench/bf16"} <= set(names)

    def fails(ctx):
        raise AssertionError("σ-gradient rel. error 3.0e-01 > 0.05")

    checks = [gpu_check.Check("good", lambda ctx: ctx.setdefault("n", "1 thing")), gpu_check.Check("bad", fails)]
    results = gpu_check.run_checks(checks, {})
    table = gpu_check.report_table(results)
    assert [r.ok for r in results] == [True, False] and gpu_check.exit_code(results) == 1
    assert "FAIL" in table and "AssertionError: σ-gradient rel. error 3.0e-01" in table and "1 passed, 1 failed" in table
    assert gpu_check.exit_code(results[:1]) == 0 and gpu_check.exit_code([]) == 1
    missing = gpu_check.run_checks([c for c in gpu_check.CHECKS if c.name == "analyses"], {})
    assert not missing[0].ok and "experiment/clip-svd" in missing[0].detail
