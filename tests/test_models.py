
import pytest
import torch

from clipsvd.errors import CheckpointError, ConfigError
from clipsvd.models import UNTRAINED_LABEL, ModelSpec, load_model, resolve_device, save_checkpoint
from tests.conftest import TINY


def test_random_weights_are_labelled_untrained_and_seeded():
    assert UNTRAINED_LABEL in TINY.label
    a, b = load_model(TINY, "cpu"), load_model(TINY, "cpu")
    c = load_model(ModelSpec(TINY.architecture, seed=5), "cpu")
    assert torch.equal(a.model.visual.proj, b.model.visual.proj)
    assert not torch.equal(a.model.visual.proj, c.model.visual.proj)


def test_load_model_returns_independent_copies(tiny):
    with torch.no_grad():
        tiny.model.visual.proj.add_(1.0)
    assert not torch.equal(load_model(TINY, "cpu").model.visual.proj, tiny.model.visual.proj)


def test_checkpoint_round_trip(tmp_path, tiny):
    with torch.no_grad():
        tiny.model.visual.proj.mul_(2.0)
    path = save_checkpoint(tiny.model, tmp_path / "tuned.safetensors")
    loaded = load_model(ModelSpec(TINY.architecture, weights=str(path)), "cpu")
    assert "tuned.safetensors" in loaded.label and UNTRAINED_LABEL not in loaded.label
    for (name, a), b in zip(tiny.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_of_another_architecture_names_the_file(tmp_path, tiny):
    path = save_checkpoint(tiny.model, tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="tiny.safetensors.*ViT-B-32"):
        load_model(ModelSpec("ViT-B-32", weights=str(path)), "cpu")


def test_truncated_and_missing_checkpoints(tmp_path, tiny):
    path = save_checkpoint(tiny.model, tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_model(ModelSpec(TINY.architecture, weights=str(path)), "cpu")
    with pytest.raises(CheckpointError, match="not found.*nope.pt"):
        load_model(ModelSpec(TINY.architecture, weights=str(tmp_path / "nope.pt")), "cpu")


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": object()}, path)  # arbitrary objects cannot be loaded with weights_only=True
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_model(ModelSpec(TINY.architecture, weights=str(path)), "cpu")


def test_unknown_architecture_and_tag():
    with pytest.raises(ConfigError, match="architecture: 'ViT-Nope'"):
        load_model(ModelSpec("ViT-Nope"), "cpu")
    with pytest.raises(ConfigError, match="not-a-tag"):
        load_model(ModelSpec("ViT-B-32", weights="not-a-tag"), "cpu")


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("gpu!")


def test_model_spec_round_trip():
    spec = ModelSpec("ViT-B-16", "openai", 3)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="unknown field"):
        ModelSpec.from_dict({"architecture": "x", "colour": 1})


def test_an_empty_model_spec_is_the_default_model_everywhere():
    """One default: a stored config without a model, ExperimentConfig and ModelSpec all mean the shipped world CLIP;
    an architecture named alone is its seeded random initialisation."""
    from clipsvd.training.experiment import ExperimentConfig

    assert ModelSpec.from_dict({}) == ModelSpec.default() == ExperimentConfig(method="zero-shot").model
    assert ExperimentConfig.from_dict({"method": "zero-shot"}).model == ModelSpec.default()
    assert not ModelSpec.from_dict({"architecture": "ViT-B-32"}).is_pretrained
