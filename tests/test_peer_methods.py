"""The methods the field compares against: CLIP-LoRA, CoOp and PEFT's LoRA family (issue 23)."""
import copy
import math

import pandas as pd
import pytest
import torch
from torch import nn

from clipsvd.errors import CheckpointError, ConfigError
from clipsvd.methods import available_methods, create_method, get_method
from clipsvd.methods.presets import Setting
from clipsvd.models import load_model
from tests.conftest import PROMPTS, TINY

NAMES = ["cat.", "dog.", "cow."]  # CoOp's class prompts ("{}." template)


def reference_logits(loaded, images, prompts=PROMPTS):
    with torch.no_grad():
        return loaded.logit_scale * loaded.encode_image(images) @ loaded.encode_text(prompts).t()


def logits_of(method, images, prompts=PROMPTS):
    with torch.no_grad():
        return method.logits(images, method.class_weights(prompts))


def perturb(method, scale=0.05, seed=0):
    """Move every trainable tensor (B = 0 at init would hide a wrong merge)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


def meta_vit_b16():
    """open_clip's ViT-B/16 on the meta device: shapes only, for exact counts in milliseconds."""
    import open_clip

    with torch.device("meta"):
        return open_clip.create_model("ViT-B-16", device="meta")


def attach_meta(name, config=None):
    from types import SimpleNamespace

    model = meta_vit_b16()
    method = create_method(name, config)
    method.loaded = SimpleNamespace(model=model)
    method.original_parameter_count = sum(p.numel() for p in model.parameters())
    model.requires_grad_(False)
    method.setup(method.loaded, PROMPTS)
    return method


# ----- CLIP-LoRA ---------------------------------------------------------------------------------------------
def test_clip_lora_counts_on_vit_b16_shapes():
    method = attach_meta("clip-lora")
    # vision 12 × 3 × 2 × (768 + 768) = 110,592; text 12 × 3 × 2 × (512 + 512) = 73,728
    trainable = {n: p.numel() for n, p in method.model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == 184_320
    assert sum(v for n, v in trainable.items() if n.startswith("visual")) == 110_592
    assert len(trainable) == 2 * 12 * 3 * 2
    with_o = attach_meta("clip-lora", {"params": ["q", "k", "v", "o"], "encoder": "vision", "position": "half-up"})
    assert with_o.parameter_report()["trainable"] == 6 * 4 * 2 * (768 + 768)


def test_clip_lora_initialisation_and_scaling_follow_loralib(tiny, images):
    reference = reference_logits(load_model(TINY, "cpu"), images)
    method = create_method("clip-lora").attach(tiny, PROMPTS)
    assert torch.equal(logits_of(method, images), reference)  # B = 0: exactly the pretrained logits
    update = method.lora_updates()["visual.transformer.resblocks.0.attn.lora.q"]
    assert update.scaling == pytest.approx(1 / math.sqrt(2))  # α/√r, not α/r
    assert torch.count_nonzero(update.lora_B) == 0 and update.lora_A.abs().max() <= 1 / math.sqrt(64) + 1e-7
    assert isinstance(update.dropout, nn.Dropout) and update.dropout.p == 0.25


def test_clip_lora_equals_the_official_split_projections(tiny):
    """q, k, v with their low-rank terms, then attention: loralib's PlainMultiheadAttentionLoRA, written out."""
    method = create_method("clip-lora", {"params": ["q", "k", "v", "o"], "dropout": 0.0}).attach(tiny, PROMPTS)
    perturb(method)
    attn = method.model.visual.transformer.resblocks[0].attn
    x = torch.randn(2, 5, attn.embed_dim)
    (wq, wk, wv), (bq, bk, bv) = attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)
    lora = {k: attn.lora[k] for k in "qkvo"}
    q, k, v = (x @ (w + lora[n].scaling * lora[n].lora_B @ lora[n].lora_A).t() + b
               for n, w, b in (("q", wq, bq), ("k", wk, bk), ("v", wv, bv)))
    heads = attn.num_heads
    split = [t.reshape(2, 5, heads, -1).transpose(1, 2) for t in (q, k, v)]
    context = torch.nn.functional.scaled_dot_product_attention(*split).transpose(1, 2).reshape(2, 5, -1)
    wo = attn.out_proj.weight + lora["o"].scaling * lora["o"].lora_B @ lora["o"].lora_A
    expected = context @ wo.t() + attn.out_proj.bias
    with torch.no_grad():
        assert (attn(x, x, x, need_weights=False)[0] - expected).abs().max() <= 1e-5
        # torch's own path (need_weights) on the merged weights gives the same output
        assert (attn(x, x, x, need_weights=True)[0] - expected).abs().max() <= 1e-5


def test_clip_lora_one_step_moves_only_lora_and_merge_reload_reproduce(tmp_path, images):
    from clipsvd.runs.store import RunStore  # noqa: F401  (the run format the adapter goes into)
    from safetensors.torch import load_file, save_file

    loaded = load_model(TINY, "cpu")
    frozen = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    method = create_method("clip-lora").attach(loaded, PROMPTS)
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    labels = torch.tensor([0, 1, 2, 0])
    method.loss(method.logits(images, method.class_weights(PROMPTS)), labels, None).backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in method.model.named_parameters() if n in frozen)
    moved = [n for n, p in method.model.named_parameters() if n not in frozen]
    assert moved and all("lora" in n for n in moved)
    assert all(method.adapter_state()[n].abs().sum() > 0 for n in moved if n.endswith("lora_B"))
    method.model.eval()
    trained = logits_of(method, images)
    save_file(method.adapter_state(), tmp_path / "adapter.safetensors")
    merged = copy.deepcopy(method)
    merged.merge()
    assert not any("lora" in n for n, _ in merged.model.named_parameters())
    assert (logits_of(merged, images) - trained).abs().max() <= 1e-5
    reloaded = create_method("clip-lora").attach(load_model(TINY, "cpu"), PROMPTS)
    reloaded.load_adapter_state(load_file(tmp_path / "adapter.safetensors"))
    reloaded.model.eval()
    assert (logits_of(reloaded, images) - trained).abs().max() <= 1e-5
    with pytest.raises(CheckpointError, match=r"has shape \(2, 64\), this model expects \(3, 64\)"):
        create_method("clip-lora", {"r": 3}).attach(load_model(TINY, "cpu"), PROMPTS).load_adapter_state(
            load_file(tmp_path / "adapter.safetensors"))


def test_clip_lora_schedule_is_the_official_cosine_annealing():
    from clipsvd.training.loop import build_optimizer, lr_factor

    shots = 2
    config = get_method("clip-lora").default_config(Setting("few-shot", shots, "DescribableTextures", "natural"))
    assert (config.iterations, config.lr, config.batch_size, config.templates) == (1000, 2e-4, 32, ["a photo of a {}."])
    ours = build_optimizer([nn.Parameter(torch.zeros(1))], config)
    assert ours.defaults["betas"] == (0.9, 0.999) and ours.defaults["weight_decay"] == 1e-2
    official_optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=2e-4, weight_decay=1e-2)
    official = torch.optim.lr_scheduler.CosineAnnealingLR(official_optimizer, 500 * shots, eta_min=1e-6)
    factor = lr_factor(config, steps_per_epoch=3, total_steps=500 * shots)
    for step in range(500 * shots):
        assert config.lr * factor(step) == pytest.approx(official.get_last_lr()[0], rel=1e-9, abs=1e-12)
        official_optimizer.step()
        official.step()


def test_clip_lora_bad_input():
    with pytest.raises(ConfigError, match="params: expected one of q, k, v, o, got 'proj'"):
        create_method("clip-lora", {"params": ["q", "proj"]})
    with pytest.raises(ConfigError, match="position"):
        create_method("clip-lora", {"position": "middle"})
    with pytest.raises(ConfigError, match="r = 65 is larger than the 64 × 64 matrix"):
        create_method("clip-lora", {"r": 65}).attach(load_model(TINY, "cpu"), PROMPTS)


def test_clip_lora_positions_match_the_official_tables():
    from clipsvd.methods.clip_lora import position_layers

    assert position_layers("bottom", 12) == [0, 1, 2, 3] and position_layers("up", 12) == [8, 9, 10, 11]
    assert position_layers("half-up", 24) == list(range(12, 24)) and position_layers("top3", 12) == [9, 10, 11]


# ----- CoOp --------------------------------------------------------------------------------------------------
def test_coop_counts_and_presets():
    method = attach_meta_coop()
    assert method.parameter_report()["trainable"] == 16 * 512 == 8192
    epochs = {k: get_method("coop").default_config(Setting("few-shot", k, "OxfordPets", "natural")).epochs
              for k in (1, 2, 4, 8, 16)}
    assert epochs == {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
    assert get_method("coop").default_config(Setting("few-shot", 16, "ImageNet", "natural")).epochs == 50


def attach_meta_coop():
    """CoOp's shapes on ViT-B/16 need its tokenizer, not its weights: a real tokenizer, a meta model."""
    import open_clip
    from types import SimpleNamespace

    model = meta_vit_b16()
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    model.attn_mask = torch.full((77, 77), float("-inf")).triu(1)  # the causal mask CoOp checks, off the meta device
    loaded = SimpleNamespace(model=model, tokenizer=tokenizer, tokenize=lambda texts: tokenizer(texts))
    method = create_method("coop")
    method.loaded = loaded
    model.requires_grad_(False)
    method.original_parameter_count = sum(p.numel() for p in model.parameters())
    method.setup(loaded, NAMES)
    return method


def test_coop_from_a_phrase_is_exactly_zero_shot_and_random_context_trains_only_ctx(tiny, images):
    reference = reference_logits(load_model(TINY, "cpu"), images, [f"a photo of a {n}" for n in NAMES])
    phrase = create_method("coop", {"ctx_init": "a photo of a"}).attach(tiny, NAMES)
    assert (logits_of(phrase, images, NAMES) - reference).abs().max() <= 1e-4
    loaded = load_model(TINY, "cpu")
    frozen = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    method = create_method("coop").attach(loaded, NAMES)
    assert method.ctx.shape == (16, 64) and 0.015 < method.ctx.std() < 0.025
    start = method.ctx.detach().clone()
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1.0)
    method.loss(method.logits(images, method.class_weights(NAMES)), torch.tensor([0, 1, 2, 0]), None).backward()
    optimizer.step()
    assert not torch.equal(method.ctx, start)
    assert all(torch.equal(p, frozen[n]) for n, p in loaded.model.named_parameters())
    # novel classes reuse the shared context
    assert method.class_weights(["horse.", "sheep."]).shape == (2, 64)
    state = method.adapter_state()
    reloaded = create_method("coop").attach(load_model(TINY, "cpu"), NAMES)
    reloaded.load_adapter_state(state)
    assert (logits_of(reloaded, images, NAMES) - logits_of(method, images, NAMES)).abs().max() <= 1e-5


def test_coop_bad_input(tiny):
    with pytest.raises(ConfigError, match="longer than the context length 32 allows"):
        create_method("coop", {"ctx_init": " ".join(["word"] * 30)}).attach(tiny, NAMES)
    with pytest.raises(ConfigError, match="one template"):
        create_method("coop", {"templates": ["a {}.", "the {}."]})
    with pytest.raises(ConfigError, match="n_ctx"):
        create_method("coop", {"n_ctx": 0})
    specific = create_method("coop", {"class_specific": True}).attach(load_model(TINY, "cpu"), NAMES)
    assert specific.ctx.shape == (3, 16, 64)
    with pytest.raises(ConfigError, match="only its training classes"):
        specific.class_weights(["horse."])


def test_nearest_words_read_back_an_initialising_phrase(tiny):
    from clipsvd.analysis.prompts import nearest_words

    method = create_method("coop", {"ctx_init": "a photo of a"}).attach(tiny, NAMES)
    table = nearest_words(method, k=2)
    first = table[table["rank"] == 1]
    assert list(first["word"]) == ["a", "photo", "of", "a"]
    assert (first["distance"] <= 1e-6).all() and (table[table["rank"] == 2]["distance"] > 0).all()
    with pytest.raises(ConfigError, match="no learned context"):
        nearest_words(create_method("clip-lora").attach(load_model(TINY, "cpu"), PROMPTS))


# ----- PEFT's LoRA family ---------------------------------------------------------------------------------------
def test_separate_projections_equal_open_clip_attention(tiny):
    from clipsvd.methods.peft_lora import SeparateProjectionAttention

    attn = tiny.model.transformer.resblocks[0].attn
    separate = SeparateProjectionAttention(attn)
    x = torch.randn(2, 7, attn.embed_dim)
    mask = tiny.model.attn_mask[:7, :7]
    with torch.no_grad():
        for kwargs in ({"need_weights": False}, {"need_weights": False, "attn_mask": mask}, {"need_weights": True}):
            assert (separate(x, x, x, **kwargs)[0] - attn(x, x, x, **kwargs)[0]).abs().max() <= 1e-6
    assert torch.equal(separate.in_proj_weight, attn.in_proj_weight)


@pytest.mark.parametrize("name, trainable", [("lora", 184_320), ("dora", 184_320 + 12 * 3 * (768 + 512))])
def test_peft_counts_on_vit_b16_shapes(name, trainable):
    assert attach_meta(name).parameter_report()["trainable"] == trainable


@pytest.mark.parametrize("name", ["lora", "dora", "pissa"])
def test_peft_methods_start_at_the_pretrained_model_and_merge_reload(name, images, tmp_path):
    from safetensors.torch import load_file, save_file

    from clipsvd.analysis.current_weights import block_matrix
    from clipsvd.models.layout import encoder_blocks

    pretrained = load_model(TINY, "cpu")
    reference = reference_logits(pretrained, images)
    method = create_method(name).attach(load_model(TINY, "cpu"), PROMPTS)
    method.model.eval()  # the adapter's input dropout acts on PiSSA's non-zero branch while training
    assert (logits_of(method, images) - reference).abs().max() <= 1e-5
    before, after = encoder_blocks(pretrained.model, "visual"), encoder_blocks(method.model, "visual")
    for kind in ("q", "k", "v"):  # PiSSA: residual + adapter = W
        w0 = block_matrix(before.blocks[0], before.location(kind))
        assert (block_matrix(after.blocks[0], after.location(kind)) - w0).abs().max() <= 1e-5
    frozen = {n: p.detach().clone() for n, p in method.model.named_parameters() if not p.requires_grad}
    method.model.train()
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    method.loss(method.logits(images, method.class_weights(PROMPTS)), torch.tensor([0, 1, 2, 0]), None).backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in method.model.named_parameters() if n in frozen)
    assert {n.split(".")[-3] for n in method.adapter_state()} <= {"lora_A", "lora_B", "lora_magnitude_vector"}
    method.model.eval()
    trained = logits_of(method, images)
    assert (trained - reference).abs().max() > 1e-3
    save_file(method.adapter_state(), tmp_path / "adapter.safetensors")
    merged = copy.deepcopy(method)
    merged.merge()
    assert all(isinstance(b.attn, nn.MultiheadAttention) for b in merged.model.transformer.resblocks)
    assert (logits_of(merged, images) - trained).abs().max() <= 1e-5
    reloaded = create_method(name).attach(load_model(TINY, "cpu"), PROMPTS)
    reloaded.load_adapter_state(load_file(tmp_path / "adapter.safetensors"))
    reloaded.model.eval()
    assert (logits_of(reloaded, images) - trained).abs().max() <= 1e-5


def test_peft_lora_is_clip_lora_through_peft(images):
    """Same matrices, same A and B, same α/√r: PEFT's lora and the hand-written clip-lora give the same logits."""
    ours = create_method("clip-lora", {"params": ["q", "k", "v", "o"]}).attach(load_model(TINY, "cpu"), PROMPTS)
    perturb(ours)
    theirs = create_method("lora", {"params": ["q", "k", "v", "o"]}).attach(load_model(TINY, "cpu"), PROMPTS)
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}
    state = {}
    for path, update in ours.lora_updates().items():
        attn_path, kind = path.rsplit(".lora.", 1)
        for factor in ("A", "B"):
            state[f"{attn_path}.{names[kind]}.lora_{factor}.default.weight"] = getattr(update, f"lora_{factor}")
    theirs.load_adapter_state(state)
    ours.model.eval(), theirs.model.eval()
    assert (logits_of(ours, images) - logits_of(theirs, images)).abs().max() <= 1e-5


def test_peft_bad_input(monkeypatch):
    import peft

    monkeypatch.setattr(peft, "__version__", "0.8.2")
    with pytest.raises(ConfigError, match=r"needs peft >= 0\.11\.0 .*peft 0\.8\.2 is installed"):
        create_method("dora").attach(load_model(TINY, "cpu"), PROMPTS)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="r = 100 is larger"):
        create_method("pissa", {"r": 100}).attach(load_model(TINY, "cpu"), PROMPTS)
    with pytest.raises(ConfigError, match="params: expected one of q, k, v, o, got 'fc'"):
        create_method("lora", {"params": ["fc"]})


# ----- analyses on merged weights -----------------------------------------------------------------------------
def test_singular_vector_rotation_separates_lora_from_clip_svd(images):
    from clipsvd.analysis.weights import singular_value_shifts, singular_vector_rotation, weights_after

    pretrained = load_model(TINY, "cpu")
    lora = create_method("clip-lora").attach(load_model(TINY, "cpu"), PROMPTS)
    perturb(lora, scale=0.3)
    rotation = singular_vector_rotation(pretrained, lora, top=4)
    adapted = rotation[rotation["kind"].isin(["q", "k", "v"])]
    untouched = rotation[~rotation["kind"].isin(["q", "k", "v"])]
    assert (adapted["left_angle_deg"] > 0.01).all() and (untouched["left_angle_deg"] == 0).all()
    # the unmerged adapter and its merged copy are read the same way (access.current_weight's effective_weight)
    merged = weights_after(lora)
    assert singular_value_shifts(pretrained, lora).equals(singular_value_shifts(pretrained, merged))
    svd = create_method("clip-svd").attach(load_model(TINY, "cpu"), PROMPTS)
    with torch.no_grad():
        for sigma in svd.trainable_parameters():
            sigma.mul_(1 + 0.01 * torch.arange(sigma.numel()) / sigma.numel())  # stretch, keep the order
    svd_rotation = singular_vector_rotation(pretrained, svd, top=4)
    assert svd_rotation["left_angle_deg"].max() < 1e-3 < adapted["left_angle_deg"].min()
    with pytest.raises(ConfigError, match="top"):
        singular_vector_rotation(pretrained, lora, top=0)


# ----- capabilities the weight pages read (not method names) ---------------------------------------------------
@pytest.mark.parametrize("name", available_methods())
def test_changes_weights_and_learns_context_say_what_the_method_trains(name):
    """A method changes weights exactly where one of its trainable tensors is a parameter of the CLIP model, and
    learns a context exactly where learned_context() gives one: the pages' one-line notes rely on both."""
    loaded = load_model(TINY, "cpu")
    method = create_method(name).attach(loaded, NAMES if name == "coop" else PROMPTS)
    model_params = {id(p) for p in loaded.model.parameters()}
    assert method.changes_weights == any(id(p) in model_params for p in method.trainable_parameters())
    assert method.learns_context == (method.learned_context() is not None)


def test_weight_notes_say_coop_changes_no_weight():
    from clipsvd.analysis.heads import HeadChange, head_change, unchanged_weights_note

    coop, lora, zero = get_method("coop"), get_method("clip-lora"), get_method("zero-shot")
    note = unchanged_weights_note(coop, "attention or MLP matrices")
    assert note.startswith("CoOp changes no weight of the model: it trains 16 learned context vectors")
    assert note.endswith("none of the attention or MLP matrices changed.")
    assert unchanged_weights_note(lora, "matrices") is None
    assert "trains nothing" in unchanged_weights_note(zero, "matrices")
    table = pd.DataFrame({"ov_change": [0.0], "qk_change": [0.0]})
    state = head_change(table, "ov_change", changes_weights=False)
    assert state is HeadChange.NO_WEIGHT and not state.ranks_by_weight and not state.weights_differ
    assert HeadChange.NO_HEAD.weights_differ and head_change(table, "ov_change") is HeadChange.NO_HEAD


def test_rotation_heatmap_draws_every_matrix_on_its_scale():
    from clipsvd.plots import sv_rotation_heatmap

    rows = [{"encoder": e, "layer": layer, "kind": k, "top": 8, "left_angle_deg": 10.0 * layer,
             "right_angle_deg": 1.0, "min_abs_cos": 0.5} for e in ("visual", "text") for layer in range(2)
            for k in ("q", "k", "v", "out", "fc", "proj")]
    fig = sv_rotation_heatmap(pd.DataFrame(rows))
    assert len(fig.data) == 2 and fig.data[0].zmax == 10.0 and fig.data[0].zmin == 0.0
    assert "top 8 singular vectors" in fig.layout.title.text
    assert sv_rotation_heatmap(pd.DataFrame(rows), "min_abs_cos").data[0].zmax == 1.0
    with pytest.raises(ValueError, match="one of"):
        sv_rotation_heatmap(pd.DataFrame(rows), "rel_change")
