"""The official protocols: presets against a table of the official repositories' values, the schedules against
torch's own schedulers stepped the official way, ProLIP's cached-view training against its official loop."""
import math

import pytest
import torch
import torch.nn.functional as F

from clipsvd.cli import main as cli_main
from clipsvd.data import DatasetSpec, TransformedSplit, few_shot, load_dataset, train_transform
from clipsvd.errors import ConfigError
from clipsvd.methods import create_method, get_method
from clipsvd.methods.presets import Setting
from clipsvd.models import load_model
from clipsvd.runs import RunStatus
from clipsvd.training import ExperimentConfig, planned_steps, train
from clipsvd.training.loop import lr_factor, steps_per_epoch
from tests.conftest import TINY

NATURAL = ["Caltech101", "DescribableTextures", "EuroSAT", "FGVCAircraft", "Food101", "ImageNet", "OxfordFlowers",
           "OxfordPets", "StanfordCars", "SUN397", "UCF101"]
CLASSES = {"Caltech101": 100, "DescribableTextures": 47, "EuroSAT": 10, "FGVCAircraft": 100, "Food101": 101,
           "ImageNet": 1000, "OxfordFlowers": 102, "OxfordPets": 37, "StanfordCars": 196, "SUN397": 397, "UCF101": 101}
SHOTS = [1, 2, 4, 8, 16]

# HealthX-Lab/CLIP-SVD @ 022b1eda: configs/few_shot/*.yaml, configs/base2new/*.yaml, train.py.
CLIPSVD_FEW_SHOT_TEMPLATES = {
    "Caltech101": "a photo of a {}.", "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.", "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "Food101": "a photo of a {}, a type of food.", "ImageNet": "a photo of a {}.",
    "OxfordFlowers": "a photo of a {}, a type of flower.", "OxfordPets": "a photo of a {}, a type of pet.",
    "StanfordCars": "a photo of a {}.", "SUN397": "a photo of a {}.", "UCF101": "a photo of a person doing {}.",
}
CLIPSVD_B2N_EPOCHS = {"Caltech101": 20, "DescribableTextures": 20, "EuroSAT": 20, "FGVCAircraft": 20, "OxfordPets": 20,
                      "Food101": 10, "ImageNet": 10, "OxfordFlowers": 10, "StanfordCars": 10, "SUN397": 10, "UCF101": 10}
CLIPSVD_BIO_FEW_SHOT = {  # lr, epochs
    "BTMRI": (7e-3, 100), "BUSI": (2e-3, 100), "CHMNIST": (7e-3, 100), "COVID_19": (5e-4, 100),
    "CTKidney": (1e-3, 200), "KneeXray": (8e-3, 100), "Kvasir": (5e-3, 100), "LungColon": (3e-3, 100),
    "OCTMNIST": (1e-2, 100), "RETINA": (7e-3, 100),
}
CLIPSVD_BIO_B2N = {
    "BTMRI": (9e-3, 100), "CHMNIST": (1e-3, 60), "COVID_19": (2e-3, 50), "CTKidney": (1e-2, 200),
    "KneeXray": (2e-3, 60), "Kvasir": (3e-3, 60), "LungColon": (1e-2, 100), "OCTMNIST": (2e-2, 100),
    "RETINA": (2e-2, 60),
}
# minglllli/CLIPFit @ 4dde0494: README.md, trainers/ClipFit.py CUSTOM_TEMPLATES, configs/trainers/ClipFit/*.yaml.
CLIPFIT_TEMPLATES = dict(CLIPSVD_FEW_SHOT_TEMPLATES, DescribableTextures="a photo of a {}, a type of texture.",
                         Food101="a photo of {}, a type of food.")
# astra-vision/ProLIP @ b43e795c: datasets/imagenet.py imagenet_templates.
PROLIP_IMAGENET = ["itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                   "a {} in a video game.", "art of the {}.", "a photo of the small {}."]


def resolved(method: str, dataset: str, shots: int = 16, protocol: str = "few-shot", kind: str = "coop"):
    config = ExperimentConfig(method=method, dataset=DatasetSpec(kind, dataset), shots=shots, protocol=protocol)
    return config.method_config(), planned_steps(config)


@pytest.mark.parametrize("dataset", NATURAL)
def test_clip_svd_natural_presets_match_the_official_configs(dataset):
    for k in SHOTS:
        cfg, steps = resolved("clip-svd", dataset, k)
        assert steps == 200 * k and cfg.iterations == 200 * k
        assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.optimizer) == (5e-4, 0.01, 32, "adamw")
        assert (cfg.schedule, cfg.min_lr, cfg.warmup_epochs, cfg.crop_scale_min) == ("cosine", 1e-6, 0, 0.08)
        assert cfg.templates == [CLIPSVD_FEW_SHOT_TEMPLATES[dataset]]
    cfg, steps = resolved("clip-svd", dataset, 16, "base2novel")
    assert (cfg.lr, cfg.epochs, cfg.schedule, cfg.iterations) == (4e-4, CLIPSVD_B2N_EPOCHS[dataset], "cosine-cyclic", None)
    base_images = 16 * math.ceil(CLASSES[dataset] / 2)
    assert steps == CLIPSVD_B2N_EPOCHS[dataset] * math.ceil(base_images / 32)  # the official loader keeps the last batch
    wanted = "a photo of a {}." if dataset in ("DescribableTextures", "EuroSAT", "UCF101") else None
    assert cfg.templates == [wanted or CLIPSVD_FEW_SHOT_TEMPLATES[dataset].replace("a photo of a {}, a type of food",
                                                                                  "a photo of {}, a type of food")]


def test_clip_svd_base2novel_dtd_runs_240_steps_with_a_cycle_of_40():
    cfg, steps = resolved("clip-svd", "dtd", 16, "base2novel")
    assert steps == 240
    factor = lr_factor(cfg, steps_per_epoch(16 * 24, 32), steps)
    assert factor(0) == pytest.approx(1.0) and factor(40) == pytest.approx(1.0)
    assert factor(20) == pytest.approx(cfg.min_lr / cfg.lr)


@pytest.mark.parametrize("dataset", sorted(CLIPSVD_BIO_FEW_SHOT))
def test_clip_svd_biomedical_presets_match_the_official_configs(dataset):
    lr, epochs = CLIPSVD_BIO_FEW_SHOT[dataset]
    cfg, _ = resolved("clip-svd", dataset, 4, kind="biomedcoop")
    assert (cfg.lr, cfg.epochs, cfg.weight_decay, cfg.schedule) == (lr, epochs, 0.0, "cosine-cyclic")
    assert cfg.templates == ["a chest xray of {}." if dataset == "COVID_19" else "a photo of a {}."]
    if dataset in CLIPSVD_BIO_B2N:
        lr, epochs = CLIPSVD_BIO_B2N[dataset]
        cfg, _ = resolved("clip-svd", dataset, 16, "base2novel", kind="biomedcoop")
        assert (cfg.lr, cfg.epochs, cfg.weight_decay) == (lr, epochs, 0.0)
        assert cfg.templates == ["a photo of a {}."]
        assert cfg.layers == (list(range(4, 12)) if dataset == "CTKidney" else None)


def test_biomedical_steps_follow_the_class_counts():
    assert resolved("clip-svd", "BTMRI", 16, kind="biomedcoop")[1] == 200  # 64 images: 2 batches × 100 epochs
    assert resolved("clip-svd", "CHMNIST", 16, "base2novel", kind="biomedcoop")[1] == 120


@pytest.mark.parametrize("dataset", NATURAL)
def test_clipfit_presets_match_the_official_configs_and_readme(dataset):
    epochs = 10 if dataset in ("Food101", "ImageNet") else 100
    for k in SHOTS:
        cfg, steps = resolved("clipfit", dataset, k)
        assert (cfg.epochs, cfg.lr, cfg.optimizer, cfg.momentum, cfg.weight_decay) == (epochs, 2e-3, "sgd", 0.9, 5e-4)
        assert (cfg.warmup_epochs, cfg.warmup, cfg.warmup_lr, cfg.schedule, cfg.min_lr) == (
            1, "constant", 1e-5, "cosine-epoch", 0.0)
        assert cfg.text_consistency_weight == (8.0 if dataset in ("DescribableTextures", "SUN397") else 2.0)
        assert cfg.templates == [CLIPFIT_TEMPLATES[dataset]]
        n = k * CLASSES[dataset]
        assert steps == epochs * (n // 32 if n >= 32 else 1)  # Dassl drops the last incomplete batch
    assert resolved("clipfit", dataset, 16, "base2novel")[0].text_consistency_weight == 8.0


@pytest.mark.parametrize("k", SHOTS)
def test_prolip_presets_match_the_official_configs(k):
    cfg, steps = resolved("prolip", "ImageNet", k)
    assert steps == 300 and cfg.cached_views == 300
    assert (cfg.lr, cfg.optimizer, cfg.eps, cfg.schedule, cfg.min_lr, cfg.crop_scale_min) == (
        1e-5, "adam", 1e-4, "cosine", 0.0, 0.5)
    assert cfg.anchor_weight == pytest.approx(1 / k)
    assert cfg.templates == PROLIP_IMAGENET
    assert resolved("prolip", "DescribableTextures", k)[0].templates == ["{} texture."]


def test_every_preset_value_names_its_official_source():
    for method, repository in (("clip-svd", "HealthX-Lab/CLIP-SVD@"), ("clipfit", "minglllli/CLIPFit@"),
                               ("prolip", "astra-vision/ProLIP@")):
        preset = get_method(method).preset(Setting("few-shot", 4, "DescribableTextures", "natural"))
        assert preset.values and set(preset.sources) == set(preset.values)
        assert all(source.startswith(repository) for source in preset.sources.values())
        assert preset.differences


def test_our_own_datasets_keep_the_method_defaults():
    cfg = ExperimentConfig(method="clip-svd", shots=16).method_config()  # the world dataset: no official preset
    assert cfg.iterations is None and cfg.schedule == "cosine" and cfg.templates == []
    assert ExperimentConfig(method="prolip", shots=4).method_config().anchor_weight == 0.25  # λ = 1/K still applies


def test_a_dataset_template_override_wins_over_the_preset():
    config = ExperimentConfig(method="clip-svd", dataset=DatasetSpec("coop", "DTD", template="{} surface."), shots=2)
    assert config.method_config().templates == ["{} surface."]


def test_config_command_prints_the_resolved_config(capsys):
    import json

    assert cli_main(["config", "--method", "clip-svd", "--dataset", "DTD", "--shots", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 800 and printed["setting"]["backbone"] == "natural"
    assert printed["method_config"]["templates"] == ["{} texture."]
    assert printed["preset"]["sources"]["iterations"].startswith("HealthX-Lab/CLIP-SVD@")


# ----- schedules against torch's schedulers, stepped as the official code steps them --------------------------------
def _torch_rates(scheduler_factory, steps: int, per_epoch_step: int | None = None) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = scheduler_factory(optimizer)
    rates = []
    for step in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if per_epoch_step is None or (step + 1) % per_epoch_step == 0:
            scheduler.step()
    return rates


def test_cyclic_and_plain_cosine_equal_cosine_annealing_stepped_per_iteration():
    cyclic = get_method("clip-svd").Config(lr=1e-3, epochs=5, schedule="cosine-cyclic", min_lr=1e-6)
    ours = lr_factor(cyclic, 3, 15)
    reference = _torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 5, eta_min=1e-6), 15)
    assert [1e-3 * ours(s) for s in range(15)] == pytest.approx(reference, rel=1e-6)
    plain = get_method("clip-svd").Config(lr=1e-3, iterations=40, schedule="cosine", min_lr=1e-6)
    ours = lr_factor(plain, 7, 40)
    reference = _torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 40, eta_min=1e-6), 40)
    assert [1e-3 * ours(s) for s in range(40)] == pytest.approx(reference, rel=1e-6)


def test_per_epoch_cosine_after_a_constant_warm_up_follows_dassl():
    cfg = get_method("clipfit").Config(lr=1e-3, epochs=6, schedule="cosine-epoch", warmup_epochs=1,
                                       warmup="constant", warmup_lr=1e-5, min_lr=0.0)
    ours = [1e-3 * lr_factor(cfg, 4, 24)(s) for s in range(24)]
    assert ours[:4] == [pytest.approx(1e-5)] * 4  # the warm-up epoch
    # Dassl: the cosine (T_max = max_epoch) starts after the warm-up epoch and steps once per epoch.
    after = _torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 6), 20, per_epoch_step=4)
    assert ours[4:] == pytest.approx(after, rel=1e-6)


# ----- ProLIP: training on cached views equals the official loop -----------------------------------------------------
def test_prolip_cached_views_equal_the_official_loop():
    dataset = load_dataset(DatasetSpec("builtin", "animal-shape"))
    split = few_shot(dataset.train, 2, seed=1)
    prompts = dataset.prompts()
    views, seed, lr, anchor = 6, 3, 1e-2, 0.5

    loaded = load_model(TINY, "cpu")
    method = create_method("prolip", {"cached_views": views, "lr": lr, "anchor_weight": anchor}).attach(loaded, prompts)
    transform = train_transform(loaded.image_size, loaded.mean, loaded.std, 0.5)
    result = train(method, split, prompts, transform, seed=seed)
    assert result.status == RunStatus.COMPLETED and result.steps == views and len(result.history) == views

    # The official loop (astra-vision/ProLIP methods/ProLIP.py), written out on the same model.
    reference = load_model(TINY, "cpu")
    visual = reference.model.visual
    w0 = visual.proj.detach().clone()
    w = torch.nn.Parameter(w0.clone())
    text = reference.encode_text(prompts).detach()
    torch.manual_seed(seed)
    images = TransformedSplit(split, transform)
    with torch.no_grad():
        cached = [torch.stack([visual._pool(visual.transformer(visual._embeds(images[i][0][None])))[0][0]
                               for i in range(len(images))]) for _ in range(views)]
    labels = torch.tensor(split.labels)
    optimizer = torch.optim.Adam([w], lr=lr, eps=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, views)
    count = 0
    for _ in range(views):
        count = 0 if (count + 1) % views == 0 else count + 1  # the official view counter: 1, 2, …, V-1, 0
        logits = reference.logit_scale * F.normalize(cached[count] @ w, dim=-1) @ text.t()
        loss = F.cross_entropy(logits, labels) + anchor * ((w - w0) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    assert torch.allclose(method.proj.detach(), w.detach(), atol=1e-6)
    assert not torch.allclose(w.detach(), w0)


def test_cached_views_refuse_a_method_that_trains_its_backbone():
    dataset = load_dataset(DatasetSpec("builtin", "animal-shape"))
    loaded = load_model(TINY, "cpu")
    method = create_method("clip-svd", {"cached_views": 2}).attach(loaded, dataset.prompts())
    with pytest.raises(ConfigError, match="cached_views"):
        train(method, few_shot(dataset.train, 1, seed=1), dataset.prompts(),
              train_transform(loaded.image_size, loaded.mean, loaded.std))


def test_iterations_replace_epochs_and_cpu_runs_in_fp32():
    dataset = load_dataset(DatasetSpec("builtin", "animal-shape"))
    loaded = load_model(TINY, "cpu")
    method = create_method("clipfit", {"iterations": 7, "batch_size": 8}).attach(loaded, dataset.prompts())
    result = train(method, few_shot(dataset.train, 2, seed=1), dataset.prompts(),
                   train_transform(loaded.image_size, loaded.mean, loaded.std))
    assert result.steps == 7 and result.precision == "fp32"
    assert [row["step"] for row in result.history] == [3, 6, 7]  # 20 images: 3 batches per epoch
    with pytest.raises(ConfigError, match="fp16"):
        method.config.precision = "fp16"
        train(method, few_shot(dataset.train, 2, seed=1), dataset.prompts(),
              train_transform(loaded.image_size, loaded.mean, loaded.std))


def test_bf16_autocast_trains_and_is_recorded():
    """The autocast path (fp16 on CUDA in the official runs) exercised on CPU with bf16: same loop, recorded."""
    dataset = load_dataset(DatasetSpec("builtin", "animal-shape"))
    loaded = load_model(TINY, "cpu")
    method = create_method("clip-svd", {"iterations": 3, "batch_size": 8, "precision": "bf16", "lr": 1e-2})
    method.attach(loaded, dataset.prompts())
    before = [p.detach().clone() for p in method.trainable_parameters()]
    result = train(method, few_shot(dataset.train, 1, seed=1), dataset.prompts(),
                   train_transform(loaded.image_size, loaded.mean, loaded.std))
    assert result.status == RunStatus.COMPLETED and result.precision == "bf16" and result.steps == 3
    assert all(math.isfinite(row["loss"]) for row in result.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, method.trainable_parameters()))
    assert all(p.dtype == torch.float32 for p in method.trainable_parameters())  # weights stay fp32 under autocast
