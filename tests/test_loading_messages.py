"""What loading a model tells the user: no false "initialized randomly" for a model whose weights load right after,
and a file that is no checkpoint refused by name, with the formats that were expected."""
import logging
import threading

import pytest
import torch

from clipsvd.errors import CheckpointError
from clipsvd.models import ModelSpec, load_model, save_checkpoint
from clipsvd.models.checkpoints.formats import EXPECTED_FORMATS
from clipsvd.models.checkpoints.loaders import _dropping_root_record
from clipsvd.models.loading import _build_cpu_model
from clipsvd.models.world_weights import WORLD_MODEL_NAME, WORLD_WEIGHTS
from tests.conftest import TINY

RANDOM_INIT = "No pretrained weights loaded for model '{}'. Model initialized randomly."


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_the_world_clip_loads_without_open_clips_random_init_warning(caplog):
    _build_cpu_model.cache_clear()  # a cached build would log nothing either way
    filters = list(logging.getLogger().filters)
    with caplog.at_level(logging.WARNING):
        loaded = load_model(ModelSpec(WORLD_MODEL_NAME, WORLD_WEIGHTS), "cpu")
    assert "pretrained on the generated world" in loaded.spec.label
    assert RANDOM_INIT.format(WORLD_MODEL_NAME) not in warnings_of(caplog)
    assert logging.getLogger().filters == filters  # nothing left behind on the root logger


def test_a_checkpoint_file_loads_without_it_but_random_weights_keep_it(caplog, tmp_path):
    _build_cpu_model.cache_clear()
    path = save_checkpoint(load_model(TINY, "cpu").model, tmp_path / "tiny.safetensors")
    _build_cpu_model.cache_clear()
    caplog.clear()  # the random model saved above said so, truly
    with caplog.at_level(logging.WARNING):
        load_model(ModelSpec(TINY.architecture, weights=str(path)), "cpu")
    assert RANDOM_INIT.format(TINY.architecture) not in warnings_of(caplog)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_model(ModelSpec(TINY.architecture, seed=123), "cpu")  # random weights, asked for: true, so kept
    assert RANDOM_INIT.format(TINY.architecture) in warnings_of(caplog)


def test_the_analyses_skeleton_builds_without_it(caplog):
    """`clipsvd analyze` builds a weightless skeleton first; it is never used with those random weights."""
    from clipsvd.analysis.capabilities import model_skeleton

    with caplog.at_level(logging.WARNING):
        model_skeleton(ModelSpec(WORLD_MODEL_NAME, WORLD_WEIGHTS))
    assert RANDOM_INIT.format(WORLD_MODEL_NAME) not in warnings_of(caplog)


def test_only_that_record_of_that_thread_is_dropped(caplog):
    message = RANDOM_INIT.format("m")
    with caplog.at_level(logging.WARNING), _dropping_root_record(message):
        logging.warning(message)
        logging.warning("another warning")
        logging.warning(RANDOM_INIT.format("another-model"))
        other = threading.Thread(target=logging.warning, args=(message,))  # another thread's build is not ours
        other.start()
        other.join()
    logging.warning(message)  # the filter is gone afterwards
    assert warnings_of(caplog) == ["another warning", RANDOM_INIT.format("another-model"), message, message]


@pytest.mark.parametrize("name, content", [("notes.txt", b"some notes\nsecond line\n"),
                                           ("notes.pt", b"some notes\n"),  # torch.load: 'pop from empty list'
                                           ("hello.bin", b"hello world"),  # torch.load: KeyError '101'
                                           ("empty.pt", b""),  # torch.load: EOFError with no message
                                           ("blob.safetensors", b"\x00\x01\x02 not safetensors")])
def test_a_file_that_is_no_checkpoint_is_refused_by_name(tmp_path, monkeypatch, name, content):
    (tmp_path / name).write_bytes(content)
    monkeypatch.chdir(tmp_path)  # `--weights notes.txt`: a bare name, as typed, without a checkpoint's suffix
    with pytest.raises(CheckpointError) as refused:
        load_model(ModelSpec(WORLD_MODEL_NAME, weights=name), "cpu")
    text = str(refused.value)
    assert f"checkpoint {name}: not a checkpoint file" in text and EXPECTED_FORMATS in text, text
    assert "pop from empty list" not in text and "weights_only=False" not in text
    if content.startswith(b"some"):
        assert "it is text, starting 'some notes'" in text


def test_real_checkpoints_are_still_sniffed_as_such(tmp_path, tiny):
    """A torch.save zip and a safetensors file load whatever their names' suffixes."""
    torch.save(tiny.model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "weights.pt").rename(tmp_path / "weights.data")
    save_checkpoint(tiny.model, tmp_path / "w.safetensors").rename(tmp_path / "w.data")
    for name in ("weights.data", "w.data"):
        loaded = load_model(ModelSpec(TINY.architecture, weights=str(tmp_path / name)), "cpu")
        assert torch.equal(loaded.model.visual.proj, tiny.model.visual.proj)
