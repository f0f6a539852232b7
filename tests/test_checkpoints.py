"""Every checkpoint format, fabricated in its exact real layout on tiny models, loads to what its own loader gives."""
import json
import os
import zipfile

import open_clip
import pytest
from conftest import tiny_hf_clip
import torch
from open_clip.model import CLIP, convert_weights_to_fp16
from safetensors.torch import save_file

from clipsvd.errors import CheckpointError
from clipsvd.models import ModelSpec, load_model, register_model_config, save_checkpoint
from clipsvd.models.checkpoints.formats import describe_tensors, is_torchscript_archive
from clipsvd.models.loading import tag_uses_quick_gelu

# head_width 64, as OpenAI's models (and open_clip's reading of their archives) assume.
OPENAI_TINY = {"embed_dim": 64, "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 16,
                                                "head_width": 64},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2}}
PROMPTS = ["a photo of a cat.", "a photo of a dog."]
FP16_TOL = 5e-3


def _features(loaded, images):
    with torch.no_grad():
        return loaded.encode_image(images), loaded.encode_text(PROMPTS)


@pytest.fixture(scope="module")
def openai_archive(tmp_path_factory):
    """A tiny CLIP saved the way OpenAI's archives are: fp16 weights, traced with torch.jit, no attn_mask buffer."""
    torch.manual_seed(0)
    model = CLIP(**OPENAI_TINY, quick_gelu=True).eval()
    convert_weights_to_fp16(model)
    model.attn_mask = model._buffers.pop("attn_mask")  # OpenAI's model keeps the mask as a plain attribute
    image, text = torch.randn(1, 3, 32, 32).half(), torch.randint(0, 49408, (1, 16))
    traced = torch.jit.trace_module(model, {"forward": (image, text), "encode_text": (text,),
                                            "encode_image": (image,)}, check_trace=False)
    path = tmp_path_factory.mktemp("openai") / "ViT-tiny.pt"
    traced.save(str(path))
    return path


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


def test_openai_archive_loads_without_arch_with_quickgelu(openai_archive, images):
    assert is_torchscript_archive(openai_archive)
    loaded = load_model(ModelSpec("auto", str(openai_archive)), "cpu")
    reference = open_clip.load_openai_model(str(openai_archive), precision="fp32", device="cpu").eval()
    assert loaded.info.activation == "QuickGELU" and "OpenAI TorchScript archive" in loaded.label
    assert "QuickGELU" in loaded.label
    image_features, text_features = _features(loaded, images)
    tokens = loaded.tokenize(PROMPTS)
    with torch.no_grad():
        ref_image = torch.nn.functional.normalize(reference.encode_image(images), dim=-1)
        ref_text = torch.nn.functional.normalize(reference.encode_text(tokens), dim=-1)
    assert (image_features - ref_image).abs().max() <= FP16_TOL
    assert (text_features - ref_text).abs().max() <= FP16_TOL


def test_openai_archive_with_a_named_arch_and_another_arch(openai_archive):
    register_model_config("clipsvd-openai-tiny", OPENAI_TINY)
    loaded = load_model(ModelSpec("clipsvd-openai-tiny", str(openai_archive)), "cpu")
    assert loaded.info.activation == "QuickGELU"  # the config says GELU; OpenAI weights still get QuickGELU
    with pytest.raises(CheckpointError, match="not clipsvd-tiny: its tensors look like clipsvd-openai-tiny"):
        load_model(ModelSpec("clipsvd-tiny", str(openai_archive)), "cpu")


def test_openai_tags_choose_quickgelu():
    assert tag_uses_quick_gelu("ViT-B-32", "openai") and tag_uses_quick_gelu("ViT-B-32", "laion400m_e32")
    assert not tag_uses_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")


@pytest.mark.parametrize("layout", ["safetensors", "state_dict", "training"])
def test_plain_files_load_exactly_and_note_unknown_activation(tmp_path, layout, images):
    register_model_config("clipsvd-openai-tiny", OPENAI_TINY)
    spec = ModelSpec("clipsvd-openai-tiny", seed=3)
    source = load_model(spec, "cpu")
    state = {k: v.clone() for k, v in source.model.state_dict().items()}
    if layout == "safetensors":
        path = save_checkpoint(source.model, tmp_path / "w.safetensors")
    elif layout == "state_dict":
        path = tmp_path / "w.bin"
        torch.save(state, path)
    else:  # open_clip's training script: DDP 'module.' keys inside 'state_dict', plus optimizer and epoch
        path = tmp_path / "epoch_3.pt"
        torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()},
                    "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}}, path)
    loaded = load_model(ModelSpec("clipsvd-openai-tiny", str(path)), "cpu")
    assert "activation unknown" in loaded.label and loaded.info.activation == "GELU"
    for a, b in zip(_features(loaded, images), _features(source, images)):
        assert (a - b).abs().max() <= 1e-6
    marked = load_model(ModelSpec("clipsvd-openai-tiny", str(path), activation="quickgelu"), "cpu")
    assert marked.info.activation == "QuickGELU" and not marked.info.note


def test_plain_file_of_another_architecture_names_it(tmp_path):
    path = save_checkpoint(load_model(ModelSpec("clipsvd-tiny"), "cpu").model, tmp_path / "tiny.safetensors")
    register_model_config("clipsvd-openai-tiny", OPENAI_TINY)
    with pytest.raises(CheckpointError, match="look like clipsvd-tiny"):
        load_model(ModelSpec("clipsvd-openai-tiny", str(path)), "cpu")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "hook": zipfile.ZipFile}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_model(ModelSpec("clipsvd-tiny", str(path)), "cpu")


# ----- Hugging Face transformers CLIPModel -----------------------------------------------------------

@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    model = tiny_hf_clip()
    folder = tmp_path_factory.mktemp("hf") / "clip-vit-tiny"
    model.save_pretrained(folder)
    return folder, model


def _hf_features(model, pixel_values, input_ids):
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixel_values)
        text = model.get_text_features(input_ids=input_ids)
    image = getattr(image, "pooler_output", image)
    text = getattr(text, "pooler_output", text)
    return torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)


def test_transformers_clip_is_converted(hf_clip, images):
    folder, reference = hf_clip
    assert (folder / "model.safetensors").is_file()
    loaded = load_model(ModelSpec("auto", str(folder / "model.safetensors")), "cpu")
    assert "converted" in loaded.label and loaded.info.activation == "QuickGELU"
    image_features, text_features = _features(loaded, images)
    ref_image, ref_text = _hf_features(reference, images, loaded.tokenize(PROMPTS))
    assert (image_features - ref_image).abs().max() <= 1e-5
    assert (text_features - ref_text).abs().max() <= 1e-5


def test_transformers_other_family_is_refused(tmp_path):
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(2, 3, 4, 4),
               "vision_model.head.attention.in_proj_weight": torch.zeros(6, 2), "logit_bias": torch.zeros(1)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="transformers 'siglip' model; only CLIPModel"):
        load_model(ModelSpec("clipsvd-tiny", str(tmp_path / "model.safetensors")), "cpu")


# ----- BiomedCLIP-style hub cache (timm image tower + BERT text tower) ------------------------------

BIOMED_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BERT_ID = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "dog", ".", "tumor", "scan"]
TINY_BIOMED_CFG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 160},
        "text_cfg": {"hf_model_name": BERT_ID, "hf_tokenizer_name": BERT_ID, "hf_proj_type": "mlp",
                     "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32},
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                       "interpolation": "bilinear", "resize_mode": "squash"},
}


def _hub_repo(cache, repo_id: str, files: dict[str, str | bytes]):
    snapshot = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot.parents[1] / "refs").mkdir(exist_ok=True)
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    for name, content in files.items():
        (snapshot / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return snapshot


def _bert_files() -> dict[str, str]:
    config = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": len(VOCAB),
              "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 64, "type_vocab_size": 2, "hidden_act": "gelu"}
    tokenizer = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64}
    return {"config.json": json.dumps(config), "vocab.txt": "\n".join(VOCAB) + "\n",
            "tokenizer_config.json": json.dumps(tokenizer)}


@pytest.fixture(scope="module")
def biomed_cache(tmp_path_factory):
    """A filled hub cache: the BiomedCLIP repo (config + open_clip_pytorch_model.bin) and its BERT repo."""
    from huggingface_hub import constants

    cache = tmp_path_factory.mktemp("hf-home") / "hub"
    saved = constants.HF_HUB_CACHE
    constants.HF_HUB_CACHE = str(cache)
    os.environ["HF_HUB_CACHE"] = str(cache)
    _hub_repo(cache, BERT_ID, _bert_files())
    snapshot = _hub_repo(cache, BIOMED_ID, {"open_clip_config.json": json.dumps(TINY_BIOMED_CFG)})
    torch.manual_seed(4)
    model = open_clip.create_model(f"hf-hub:{BIOMED_ID}", pretrained_text=False)  # random: no weights yet
    torch.save(model.state_dict(), snapshot / "open_clip_pytorch_model.bin")
    missing_bert = dict(TINY_BIOMED_CFG, model_cfg=dict(TINY_BIOMED_CFG["model_cfg"], text_cfg=dict(
        TINY_BIOMED_CFG["model_cfg"]["text_cfg"], hf_model_name="microsoft/not-in-cache",
        hf_tokenizer_name="microsoft/not-in-cache")))
    _hub_repo(cache, "lab/biomed-without-bert", {"open_clip_config.json": json.dumps(missing_bert)})
    yield cache
    constants.HF_HUB_CACHE = saved
    os.environ.pop("HF_HUB_CACHE", None)


def test_biomedclip_loads_offline_from_the_cache(biomed_cache):
    from PIL import Image

    spec = ModelSpec(f"hf-hub:{BIOMED_ID}")
    loaded = load_model(spec, "cpu")
    reference, _, preprocess = open_clip.create_model_and_transforms(f"hf-hub:{BIOMED_ID}")
    reference.eval()
    loaded.model.eval()
    picture = Image.fromarray((torch.rand(120, 200, 3) * 255).byte().numpy())
    ours = loaded.eval_transform()(picture)
    assert (ours - preprocess(picture)).abs().max() == 0  # bilinear + squash, as the model's config says
    tokenizer = open_clip.get_tokenizer(f"hf-hub:{BIOMED_ID}")
    with torch.no_grad():
        ref_image = torch.nn.functional.normalize(reference.encode_image(ours[None]), dim=-1)
        ref_text = torch.nn.functional.normalize(reference.encode_text(tokenizer(PROMPTS)), dim=-1)
    image_features, text_features = _features(loaded, ours[None])
    assert (image_features - ref_image).abs().max() <= 1e-6
    assert (text_features - ref_text).abs().max() <= 1e-6


def test_hub_cache_without_the_text_tower_names_the_repo(biomed_cache):
    with pytest.raises(CheckpointError, match="text tower 'microsoft/not-in-cache' is not in the hub cache"):
        load_model(ModelSpec("hf-hub:lab/biomed-without-bert"), "cpu")


def test_local_dir_without_tokenizer_files_names_them(biomed_cache, tmp_path):
    snapshot = next((biomed_cache / f"models--{BIOMED_ID.replace('/', '--')}" / "snapshots").iterdir())
    for name in ("open_clip_config.json", "open_clip_pytorch_model.bin"):
        (tmp_path / name).write_bytes((snapshot / name).read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="tokenizer files missing in .*vocab.txt"):
        load_model(ModelSpec(f"local-dir:{tmp_path}"), "cpu")


def test_missing_transformers_names_the_package(biomed_cache, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    with pytest.raises(CheckpointError, match=r"pip install 'clipsvd\[biomed\]'"):
        load_model(ModelSpec(f"hf-hub:{BIOMED_ID}", seed=7), "cpu")


def test_describe_tensors_of_a_timm_tower():
    assert "timm" in describe_tensors({"visual.trunk.patch_embed.proj.weight": torch.zeros(1)})


# ----- every method and analysis on the BiomedCLIP-style model ---------------------------------------

@pytest.mark.parametrize("name", ["clip-svd", "clipfit", "prolip", "linear-probe", "zero-shot"])
def test_every_method_attaches_and_trains_on_biomedclip(biomed_cache, name):
    from clipsvd.methods import create_method

    loaded = load_model(ModelSpec(f"hf-hub:{BIOMED_ID}"), "cpu")
    method = create_method(name).attach(loaded, PROMPTS)
    images = torch.randn(2, 3, 160, 160)
    logits = method.logits(images, method.class_weights(PROMPTS))
    loss = method.loss(logits, torch.tensor([0, 1]), method.class_weights(PROMPTS))
    if method.trainable_parameters():
        loss.backward()
        assert all(p.grad is not None for p in method.trainable_parameters())
    if name == "clip-svd":  # timm ViT 6 × 6 × 64 + BERT 2 × (4·32 + 32 + 32)
        assert method.parameter_report()["trainable"] == 6 * 6 * 64 + 2 * 6 * 32


def test_textspan_terms_sum_to_the_embedding_on_the_timm_tower(biomed_cache):
    from clipsvd.analysis.decomposition import direct_contributions
    from clipsvd.analysis.textspan import explain_heads

    loaded = load_model(ModelSpec(f"hf-hub:{BIOMED_ID}"), "cpu")
    loaded.model.eval()
    images = torch.randn(3, 3, 160, 160)
    parts = direct_contributions(loaded, images, layers=[-2, -1])
    assert parts.heads.shape == (3, 2, 2, 32)
    assert (parts.heads.sum((1, 2)) + parts.rest - parts.embedding).abs().max() <= 1e-4
    with torch.no_grad():
        assert (parts.embedding - loaded.encode_image(images)).abs().max() <= 1e-5
    result = explain_heads(loaded, [images], ["a photo of a cat.", "a tumor scan.", "a dog."], texts_per_head=2)
    assert len(result.heads) == 4 * 2 and all(h.texts for h in result.heads.values())


def test_head_changes_on_timm_and_bert_towers(biomed_cache):
    from clipsvd.analysis import head_changes

    before = load_model(ModelSpec(f"hf-hub:{BIOMED_ID}"), "cpu")
    after = load_model(ModelSpec(f"hf-hub:{BIOMED_ID}"), "cpu")
    with torch.no_grad():
        after.model.visual.trunk.blocks[5].attn.qkv.weight[128:160] *= 2  # v rows of head 0 in layer 5
        after.model.text.transformer.encoder.layer[1].attention.self.value.weight[16:] *= 2  # head 1, layer 1
    visual = head_changes(before, after, "visual")
    assert (visual.iloc[0]["layer"], visual.iloc[0]["head"]) == (5, 0) and len(visual) == 12
    text = head_changes(before, after, "text")
    assert (text.iloc[0]["layer"], text.iloc[0]["head"]) == (1, 1) and len(text) == 4


def test_analyze_capabilities_are_known_before_loading(biomed_cache):
    from clipsvd.analysis.capabilities import unsupported_analyses

    assert unsupported_analyses(ModelSpec(f"hf-hub:{BIOMED_ID}")) == {}
    skipped = unsupported_analyses(ModelSpec("RN50"))
    assert set(skipped) == {"heads", "sv", "textspan"} and "ModifiedResNet" in skipped["textspan"]


# ----- CLIP-SVD decomposition cache, progress and cancel ---------------------------------------------

def test_svd_cache_progress_and_cancel(tmp_path, monkeypatch, images):
    import threading

    from clipsvd.methods import create_method
    from clipsvd.methods.base import AttachCancelled

    monkeypatch.setenv("CLIPSVD_CACHE", str(tmp_path))
    spec = ModelSpec("clipsvd-tiny", seed=11)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(AttachCancelled):
        create_method("clip-svd").attach(load_model(spec, "cpu"), PROMPTS, cancel=cancel)
    reports = []
    first = create_method("clip-svd").attach(load_model(spec, "cpu"), PROMPTS,
                                             progress=lambda done, total, message: reports.append((done, total)))
    assert reports and reports[-1][1] == len(reports) and list((tmp_path / "svd").glob("*.safetensors"))
    again = []
    second = create_method("clip-svd").attach(load_model(spec, "cpu"), PROMPTS,
                                              progress=lambda *report: again.append(report))
    assert not again  # read from the cache: nothing to decompose
    images64 = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(first.image_features(images64), second.image_features(images64))
    other = create_method("clip-svd").attach(load_model(ModelSpec("clipsvd-tiny", seed=12), "cpu"), PROMPTS,
                                             progress=lambda *report: again.append(report))
    assert again and other is not None  # other weights, other fingerprint


@pytest.mark.slow
def test_clip_svd_count_on_the_biomedclip_architecture(biomed_cache):
    """Full BiomedCLIP shapes (ViT-B/16 timm + BiomedBERT-base), built on the meta device: counts, no weights."""
    from open_clip.model import CustomTextCLIP

    from clipsvd.methods import create_method
    from clipsvd.models import LoadedModel

    bert = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512}
    _hub_repo(biomed_cache, "lab/biomedbert-size", {"config.json": json.dumps(bert)})
    with torch.device("meta"):
        model = CustomTextCLIP(
            embed_dim=512,
            vision_cfg={"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False,
                        "timm_pool": "", "timm_proj": "linear", "image_size": 224},
            text_cfg={"hf_model_name": "lab/biomedbert-size", "hf_model_pretrained": False, "hf_proj_type": "mlp",
                      "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256})
    loaded = LoadedModel(model, None, ModelSpec("biomedclip-shapes"), 224, (0.5,) * 3, (0.5,) * 3)
    method = create_method("clip-svd").attach(loaded, PROMPTS)
    assert method.parameter_report()["trainable"] == 110_592
