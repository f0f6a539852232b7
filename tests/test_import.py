"""Importing models fine-tuned elsewhere (clipsvd.importing): each format fabricated from the tiny model with known
changes, imported against its base, loaded back as a run and compared with what was fabricated."""
from __future__ import annotations

import json

import pytest
from conftest import tiny_hf_clip
import torch
from safetensors.torch import save_file
from torch import nn

from clipsvd.analysis.run_pair import load_run_pair
from clipsvd.analysis.weights import spectra
from clipsvd.errors import CheckpointError
from clipsvd.importing import import_checkpoint
from clipsvd.methods import create_method
from clipsvd.models import TINY_MODEL_NAME, ModelSpec, load_model
from clipsvd.models.loading import save_checkpoint
from clipsvd.runs import RunStore
from tests.conftest import PROMPTS

BLOCK = "visual.transformer.resblocks.0"


@pytest.fixture
def base(tmp_path):
    """The tiny model saved to a file, named as the base by path (a weight source like a user's)."""
    loaded = load_model(ModelSpec(TINY_MODEL_NAME), "cpu")
    path = save_checkpoint(loaded.model, tmp_path / "base.safetensors")
    return ModelSpec(TINY_MODEL_NAME, str(path)), {k: v.clone() for k, v in loaded.model.state_dict().items()}


def known_changes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {key: 0.01 * torch.randn(state[key].shape, generator=generator)
            for key in (f"{BLOCK}.attn.in_proj_weight", "transformer.resblocks.1.mlp.c_fc.weight", "ln_final.bias")}


def merged_state(run) -> dict[str, torch.Tensor]:
    pair = load_run_pair(run, "cpu")
    return {k: v.detach() for k, v in pair.method.merge().state_dict().items()}


def assert_state_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert set(actual) == set(expected)
    worst = max(float((actual[k] - expected[k]).abs().max()) for k in expected)
    assert worst <= atol, worst


@pytest.mark.parametrize("layout", ["safetensors", "training-checkpoint"])
def test_full_finetune_round_trips_as_its_difference(tmp_path, base, layout):
    spec, state = base
    deltas = known_changes(state)
    finetuned = {k: v + deltas.get(k, 0) for k, v in state.items()}
    if layout == "safetensors":
        path = tmp_path / "ft.safetensors"
        save_file(finetuned, str(path))
    else:  # open_clip's training checkpoint: {"epoch", "state_dict" with DataParallel's "module." prefix}
        path = tmp_path / "epoch_3.pt"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in finetuned.items()}}, path)
    store = RunStore(tmp_path / "runs")
    run = import_checkpoint(store, spec, path)
    assert run.config["method"] == "imported" and run.message == f"imported from {path.name}"
    assert set(run.adapter_tensors()) == {f"delta.{k}" for k in deltas}  # only the changed tensors are kept
    record = run.config["imported"]
    assert record["finetuned"]["path"] == str(path.resolve()) and record["base"]["spec"] == spec.to_dict()
    reloaded = store.load(run.run_id)
    assert_state_close(merged_state(reloaded), finetuned)


def test_official_clip_svd_checkpoint_gives_the_known_sigma_shifts(tmp_path, base):
    spec, state = base
    model = load_model(spec, "cpu").model
    shifts = to_official_clip_svd(model, seed=5)
    path = tmp_path / "base_model.pt"
    torch.save({"weights": model.state_dict(), "metadata": {"image_encoder": True, "text_encoder": True}}, path)
    run = import_checkpoint(RunStore(tmp_path / "runs"), spec, path)
    pair = load_run_pair(run, "cpu")
    for (encoder, layer, kind), delta in shifts.items():
        table = spectra(pair.before, pair.method, encoder, layer, kind)
        expected = torch.sort(torch.tensor(table["sigma_before"].to_numpy()) + delta.double(), descending=True)[0]
        assert torch.allclose(torch.tensor(table["sigma_after"].to_numpy()), expected, atol=1e-5)


def test_clip_svd_checkpoint_of_another_base_is_refused_by_how_much(tmp_path, base):
    spec, _ = base
    other = load_model(ModelSpec(TINY_MODEL_NAME, seed=7), "cpu").model
    to_official_clip_svd(other, seed=5)
    path = tmp_path / "other.pt"
    torch.save({"weights": other.state_dict(), "metadata": {}}, path)
    with pytest.raises(CheckpointError, match=r"U·diag\(σ₀\)·Vᵀ misses the base's .* by \d"):
        import_checkpoint(RunStore(tmp_path / "runs"), spec, path)


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_peft_adapter_saved_by_peft_merges_as_peft_merges(tmp_path, base, name):
    from peft import get_peft_model_state_dict

    spec, _ = base
    method = create_method(name, {"r": 2, "alpha": 4.0, "params": ["q", "v", "o"], "dropout": 0.0})
    method.attach(load_model(spec, "cpu"), PROMPTS)
    torch.manual_seed(1)
    with torch.no_grad():
        for key, param in method.model.named_parameters():
            if "lora_B" in key:
                param.normal_(0, 0.05)
            if "lora_magnitude_vector" in key:  # DoRA: a trained magnitude, not the initial row norms
                param.mul_(1 + 0.1 * torch.rand_like(param))
    folder = tmp_path / "adapter"
    folder.mkdir()
    save_file({f"base_model.model.{k}": v.contiguous() for k, v in get_peft_model_state_dict(method.model).items()},
              str(folder / "adapter_model.safetensors"))
    peft_config = next(iter(method.model.peft_config.values()))
    peft_config.save_pretrained(str(folder))
    expected = {k: v.detach().clone() for k, v in method.merge().state_dict().items()}
    run = import_checkpoint(RunStore(tmp_path / "runs"), spec, folder)
    assert_state_close(merged_state(run), expected)


def test_peft_adapter_for_modules_the_base_lacks_is_refused_by_name(tmp_path, base):
    spec, _ = base
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    target = "base_model.model.visual.transformer.resblocks.9.attn.q_proj"
    save_file({f"{target}.lora_A.weight": torch.ones(2, 64), f"{target}.lora_B.weight": torch.ones(64, 2)},
              str(folder / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"targets 'visual\.transformer\.resblocks\.9\.attn\.q_proj'"):
        import_checkpoint(RunStore(tmp_path / "runs"), spec, folder)


def test_clip_lora_file_merges_as_the_clip_lora_method(tmp_path, base):
    spec, _ = base
    method = create_method("clip-lora", {"r": 2, "alpha": 2.0, "params": ["q", "k", "v", "o"], "dropout": 0.0,
                                         "encoder": "both", "position": "all"})
    method.attach(load_model(spec, "cpu"), PROMPTS)
    torch.manual_seed(2)
    with torch.no_grad():
        for name, param in method.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "proj"}
    towers = [method.model.transformer, method.model.visual.transformer]  # apply_lora: text blocks, then vision
    weights = {f"layer_{i}": {names[kind]: {"w_lora_A": update.lora_A.data, "w_lora_B": update.lora_B.data}
                              for kind, update in block.attn.lora.items()}
               for i, block in enumerate(b for tower in towers for b in tower.resblocks)}
    path = tmp_path / "lora_weights.pt"
    torch.save({"weights": weights, "metadata": {"r": 2, "alpha": 2.0, "encoder": "both", "params": "qkvo",
                                                 "position": "all"}}, path)
    expected = {k: v.detach().clone() for k, v in method.merge().state_dict().items() if "lora" not in k}
    run = import_checkpoint(RunStore(tmp_path / "runs"), spec, path)
    assert_state_close(merged_state(run), expected)


def test_other_architecture_names_the_tensors_and_shapes(tmp_path, base):
    spec, state = base
    wrong = dict(state, **{"visual.conv1.weight": torch.zeros(64, 3, 8, 8)})
    save_file(wrong, str(tmp_path / "ft.safetensors"))
    with pytest.raises(CheckpointError, match=r"different architectures.*visual\.conv1\.weight: \(64, 3, 8, 8\) here, "
                                              r"\(64, 3, 16, 16\) in the base"):
        import_checkpoint(RunStore(tmp_path / "runs"), spec, tmp_path / "ft.safetensors")


def test_identical_model_is_refused_and_no_run_is_kept(tmp_path, base):
    spec, state = base
    save_file(state, str(tmp_path / "same.safetensors"))
    store = RunStore(tmp_path / "runs")
    with pytest.raises(CheckpointError, match="identical to its base"):
        import_checkpoint(store, spec, tmp_path / "same.safetensors")
    assert store.list() == []


def test_missing_and_extra_keys_are_listed_and_refused_unless_not_strict(tmp_path, base):
    spec, state = base
    finetuned = {k: v + known_changes(state).get(k, 0) for k, v in state.items() if k != "ln_final.weight"}
    finetuned["prompt_learner.ctx"] = torch.zeros(4, 64)
    path = tmp_path / "ft.safetensors"
    save_file(finetuned, str(path))
    store = RunStore(tmp_path / "runs")
    with pytest.raises(CheckpointError, match=r"missing 1 of the base's tensors \(ln_final\.weight\).*"
                                              r"1 the base does not have \(prompt_learner\.ctx\)"):
        import_checkpoint(store, spec, path)
    run = import_checkpoint(store, spec, path, strict=False)
    assert "missing 1 tensors, kept the base's: ln_final.weight" in run.message
    assert run.config["imported"]["extra"] == ["prompt_learner.ctx"]
    assert torch.equal(merged_state(run)["ln_final.weight"], state["ln_final.weight"])


def test_pickled_code_is_refused(tmp_path, base):
    spec, _ = base
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        import_checkpoint(RunStore(tmp_path / "runs"), spec, path)


class _NotATensor:
    pass


# ----- the official CLIP-SVD module layout (HealthX-Lab/CLIP-SVD svf_utils/), followed to fabricate checkpoints -----

class SVD_Linear(nn.Module):  # noqa: N801 — svf_utils/svf_torch.py's name and attributes
    def __init__(self, in_features: int, out_features: int, bias: bool, rank: int):
        super().__init__()
        self.fc_V = nn.Linear(in_features, rank, False)
        self.vector_S = nn.Parameter(torch.empty((1, rank)))
        self.fc_U = nn.Linear(rank, out_features, bias)


class PlainMultiHeadAttention(nn.Module):  # svf_utils/PlainHeadAttention.py: separate q, k, v and proj
    def __init__(self, width: int):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.proj = (nn.Linear(width, width) for _ in range(4))


def _decomposed(weight: torch.Tensor, bias: torch.Tensor | None) -> SVD_Linear:
    """svf_torch.d_nsvd at full rank: U, S, V = torch.svd(W); rows of V are the right singular vectors."""
    u, s, v = torch.svd(weight)
    layer = SVD_Linear(weight.shape[1], weight.shape[0], bias is not None, s.numel())
    with torch.no_grad():
        layer.fc_U.weight.copy_(u)
        layer.fc_V.weight.copy_(v.T)
        layer.vector_S.copy_(s.unsqueeze(0))
        if bias is not None:
            layer.fc_U.bias.copy_(bias)
    return layer


def to_official_clip_svd(model: nn.Module, seed: int) -> dict[tuple[str, int, str], torch.Tensor]:
    """Rebuild `model` in place as the official code does (PlainMultiHeadAttention.set_parameters, then every Linear
    an SVD_Linear) and shift some σ by known amounts; returns those shifts by (encoder, layer, matrix kind)."""
    generator = torch.Generator().manual_seed(seed)
    shifts = {}
    for encoder, tower in (("visual", model.visual.transformer), ("text", model.transformer)):
        for layer, block in enumerate(tower.resblocks):
            attn, width = block.attn, block.attn.embed_dim
            plain = PlainMultiHeadAttention(width)
            for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
                rows = slice(index * width, (index + 1) * width)
                setattr(plain, name, _decomposed(attn.in_proj_weight.data[rows], attn.in_proj_bias.data[rows]))
            plain.proj = _decomposed(attn.out_proj.weight.data, attn.out_proj.bias.data)
            block.attn = plain
            block.mlp.c_fc = _decomposed(block.mlp.c_fc.weight.data, block.mlp.c_fc.bias.data)
            block.mlp.c_proj = _decomposed(block.mlp.c_proj.weight.data, block.mlp.c_proj.bias.data)
            for kind, module in (("v", plain.v_proj), ("out", plain.proj), ("fc", block.mlp.c_fc)):
                sigma = module.vector_S.detach()[0]  # relative shifts: every σ stays positive, as trained ones do
                delta = 0.05 * sigma * torch.randn(sigma.shape, generator=generator)
                with torch.no_grad():
                    module.vector_S += delta
                shifts[(encoder, layer, kind)] = delta
    return shifts


# ----- the command line, evaluation on demand, and what an imported run is not -----------------------------------

def test_cli_imports_then_evaluates_on_the_dataset_named(tmp_path, base, capsys):
    from PIL import Image

    from clipsvd.cli import main

    for index, (name, colour) in enumerate([("red_apple", "red"), ("blue_sky", "blue")] * 5):
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), colour).save(folder / f"{index}.png")

    spec, state = base
    path = tmp_path / "ft.safetensors"
    save_file({k: v + known_changes(state).get(k, 0) for k, v in state.items()}, str(path))
    runs = str(tmp_path / "runs")
    assert main(["--runs-dir", runs, "import", str(path), "--base-arch", TINY_MODEL_NAME,
                 "--base-weights", spec.weights, "--label", "colleague's <b>run</b>"]) == 0
    out = capsys.readouterr().out
    run_id = RunStore(runs).list()[0].run_id
    assert "colleague's <b>run</b>" in out and "3 tensors changed" in out
    assert main(["--runs-dir", runs, "eval", run_id, "--device", "cpu"]) == 2
    assert "no dataset yet: name one with --dataset" in capsys.readouterr().err
    assert main(["--runs-dir", runs, "eval", run_id, "--dataset", "mine", "--dataset-kind", "imagefolder",
                 "--data-root", str(tmp_path / "images"), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    run = RunStore(runs).load(run_id)
    assert run.metrics["accuracy"] == printed["accuracy"] and set(run.metrics["per_class"]) == {"blue sky", "red apple"}
    assert run.config["dataset"]["root"] == str(tmp_path / "images") == run.config["imported"]["evaluated_on"]["root"]
    assert main(["--runs-dir", runs, "eval", run_id, "--device", "cpu"]) == 0  # again, on the dataset it now has
    assert json.loads(capsys.readouterr().out)["accuracy"] == printed["accuracy"]


def test_cli_strict_flag_parses_true_and_false():
    from clipsvd.cli.import_run import _boolean

    assert _boolean("false") is False and _boolean("True") is True
    with pytest.raises(Exception, match="expected true or false"):
        _boolean("maybe")


def test_imported_is_not_offered_for_training():
    from clipsvd.methods import available_methods, get_method
    from clipsvd.training import ExperimentConfig, run_experiment

    assert "imported" not in available_methods() and get_method("imported").trains is False
    with pytest.raises(Exception, match="made by `clipsvd import`, not trained"):
        run_experiment(ExperimentConfig(method="imported", model=ModelSpec(TINY_MODEL_NAME)))


# ----- formats the loader reads, fabricated as tests/test_checkpoints.py does: OpenAI archives, transformers ---------

def _openai_archive(model: nn.Module, path):
    """`model` saved as OpenAI's archives are: fp16, traced with torch.jit, the mask a plain attribute."""
    from open_clip.model import convert_weights_to_fp16

    convert_weights_to_fp16(model)
    model.attn_mask = model._buffers.pop("attn_mask")
    image, text = torch.randn(1, 3, 32, 32).half(), torch.randint(0, 49408, (1, 16))
    torch.jit.trace_module(model, {"forward": (image, text), "encode_text": (text,), "encode_image": (image,)},
                           check_trace=False).save(str(path))
    return path


def test_openai_archive_against_an_openai_archive(tmp_path):
    from open_clip.model import CLIP

    from tests.test_checkpoints import OPENAI_TINY

    torch.manual_seed(0)
    base_model = CLIP(**OPENAI_TINY, quick_gelu=True).eval()
    finetuned = CLIP(**OPENAI_TINY, quick_gelu=True).eval()
    finetuned.load_state_dict(base_model.state_dict())
    key = "visual.transformer.resblocks.1.mlp.c_fc.weight"
    with torch.no_grad():
        finetuned.get_parameter(key).add_(0.25)  # larger than fp16's rounding, so the change survives the archive
    base_path = _openai_archive(base_model, tmp_path / "base.pt")
    ft_path = _openai_archive(finetuned, tmp_path / "ft.pt")
    run = import_checkpoint(RunStore(tmp_path / "runs"), ModelSpec("auto", str(base_path)), ft_path)
    assert run.config["imported"]["finetuned"]["format"] == "OpenAI TorchScript archive"
    assert run.config["imported"]["changed_tensors"] == [key]
    assert torch.allclose(run.adapter_tensors()[f"delta.{key}"], torch.full((512, 128), 0.25), atol=1e-3)


def test_transformers_clip_against_its_base_lands_in_open_clip_layout(tmp_path):
    model = tiny_hf_clip()
    model.save_pretrained(tmp_path / "base")
    delta = 0.01 * torch.randn(64, 64)
    with torch.no_grad():
        model.vision_model.encoder.layers[0].self_attn.k_proj.weight.add_(delta)
    model.save_pretrained(tmp_path / "ft")
    run = import_checkpoint(RunStore(tmp_path / "runs"), ModelSpec("auto", str(tmp_path / "base")), tmp_path / "ft")
    stored = run.adapter_tensors()
    assert list(stored) == [f"delta.{BLOCK}.attn.in_proj_weight"]  # k is rows 64..128 of open_clip's fused in_proj
    in_proj = stored[f"delta.{BLOCK}.attn.in_proj_weight"]
    assert torch.allclose(in_proj[64:128], delta, atol=1e-6) and not in_proj[:64].any() and not in_proj[128:].any()


def test_an_imported_run_is_not_rebuilt_on_a_base_file_changed_since(tmp_path, base):
    """ΔW added to another file than the one it was taken against is another model: refused by name, not analysed."""
    spec, state = base
    fine = {k: v + (0.01 if k == f"{BLOCK}.attn.in_proj_weight" else 0.0) for k, v in state.items()}
    save_file(fine, str(tmp_path / "fine.safetensors"))
    run = import_checkpoint(RunStore(tmp_path / "runs"), spec, tmp_path / "fine.safetensors")
    assert run.config["method_config"]["base_sha256"]
    merged_state(run)  # the same base file: rebuilt
    changed = {k: v.clone() for k, v in state.items()}
    changed["ln_final.bias"] += 1.0
    save_file(changed, spec.weights)
    with pytest.raises(CheckpointError, match=r"base checkpoint .*base\.safetensors has changed since the import"):
        merged_state(run)
