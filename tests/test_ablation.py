"""Head ablation and spatial maps: explanations that can be checked (issue 21)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsvd.analysis.ablation import (
    Ablation,
    AblationResult,
    AblationStore,
    ablation_effects,
    collect_terms,
    matching_heads,
    parse_heads,
    tower_shape,
)
from clipsvd.analysis.decomposition import direct_contributions
from clipsvd.analysis.spatial import mask_share_per_patch, patch_maps, score_maps
from clipsvd.analysis.textspan import TextSpanCache, encode_texts, explain_heads
from clipsvd.errors import ConfigError, DataError
from benchmarks.bench_explanation_validity import count_flops


def test_parse_heads_names_the_valid_range():
    assert parse_heads("L3.H2, l2.h1,L3.H2", 4, 4).heads == ((3, 2), (2, 1))
    whole = parse_heads("L1,L0.MLP", 4, 4)
    assert whole.heads == tuple((1, h) for h in range(4)) and whole.mlps == (0,)
    with pytest.raises(ConfigError, match=r"L0..L3 and heads H0..H3"):
        parse_heads("L4.H0", 4, 4)
    with pytest.raises(ConfigError, match=r"H0..H3"):
        parse_heads("L1.H9", 4, 4)
    with pytest.raises(ConfigError, match="expected L<layer>.H<head>"):
        parse_heads("head 3", 4, 4)


def test_ablating_nothing_changes_nothing(tiny, images):
    terms = collect_terms(tiny, [images])
    assert torch.equal(terms.ablated(Ablation(())), terms.embedding)
    weights = F.normalize(torch.randn(3, terms.embedding.shape[1]), dim=-1)
    effects = ablation_effects(terms, Ablation(()), weights, [0, 1, 2, 0], ["a", "b", "c"],
                               {"t": weights[0]}, "pretrained")
    assert effects["overall"]["drop"].iloc[0] == 0 and (effects["per_class"]["drop"] == 0).all()
    assert effects["texts"]["drop"].iloc[0] == 0 and effects["texts"]["spread_drop"].iloc[0] == 0


def test_ablating_every_head_and_mlp_leaves_only_bias_and_ln_terms(tiny, images):
    terms = collect_terms(tiny, [images])
    rest = terms.embedding - terms.heads.sum((1, 2)) - terms.mlps.sum(1)
    everything = Ablation(tuple((l, h) for l in terms.layers for h in range(terms.heads.shape[2])),
                          tuple(terms.layers))
    left = terms.ablated(everything) - rest  # only the means remain: the same for every image
    assert (left - left[:1]).abs().max() <= 1e-6
    assert (terms.ablated(everything) - terms.embedding).abs().max() > 1e-3


def test_ablating_everything_on_the_world_leaves_chance_accuracy():
    from clipsvd.data import TransformedSplit  # noqa: F401  (imports the data package before the world's)
    from clipsvd.models import ModelSpec, load_model
    from clipsvd.data.world import load_world

    loaded = load_model(ModelSpec.default(), "cpu")
    data = load_world("world-shape-clean")
    rows = [i for i, label in enumerate(data.test.labels) if i % 10 == 0]
    split = data.test.subset(rows)
    transform = loaded.eval_transform()
    images = torch.stack([transform(split.load_image(i)) for i in range(len(split))])
    terms = collect_terms(loaded, [images])
    weights = loaded.encode_text(data.prompts()).float()
    n_layers, n_heads = tower_shape(loaded)
    everything = Ablation(tuple((l, h) for l in range(n_layers) for h in range(n_heads)), tuple(range(n_layers)))
    effects = ablation_effects(terms, everything, weights, split.labels, data.classnames)["overall"].iloc[0]
    assert effects["accuracy"] > 60  # the world CLIP knows shapes ...
    assert effects["accuracy_ablated"] <= 2 * 100 / 8  # ... and nothing is left once every term is its mean


def _plant_head(loaded, layer: int, head: int, text: torch.Tensor) -> None:
    """Set head `head` of `layer` to write (a varying multiple of) one direction whose projection is `text`."""
    visual = loaded.model.visual
    attn = visual.transformer.resblocks[layer].attn
    width, d_h = attn.embed_dim, attn.head_dim
    direction = text @ torch.linalg.pinv(visual.proj)  # residual r with r·proj = text
    with torch.no_grad():
        cols = slice(head * d_h, (head + 1) * d_h)
        attn.out_proj.weight[:, cols] = 0
        attn.out_proj.weight[:, head * d_h] = 40 * direction / direction.norm()
        attn.in_proj_weight[2 * width + head * d_h] *= 20  # its value varies strongly over images


def test_a_planted_head_is_found_by_the_match_query_and_its_ablation_removes_its_text(tiny, tmp_path):
    corpus = ["a photo of a zebra.", "a red car.", "a green field.", "an old church.", "a bowl of soup.",
              "a snowy mountain.", "a small boat."]
    text = encode_texts(tiny, corpus)[0]
    _plant_head(tiny, 1, 1, text)
    torch.manual_seed(0)
    images = torch.randn(24, 3, 64, 64)
    result = explain_heads(tiny, [images], corpus, texts_per_head=3, cache=TextSpanCache(tmp_path))
    found = matching_heads([result], "zebra", top_k=1)
    assert (1, 1) in found.heads
    assert matching_heads([result], "unicorn").heads == () and "nothing ablated" in matching_heads([result],
                                                                                                  "unicorn").how
    terms = collect_terms(tiny, [images])
    weights = F.normalize(torch.randn(2, text.shape[0]), dim=-1)
    planted = ablation_effects(terms, Ablation(((1, 1),)), weights, [0, 1] * 12, ["a", "b"],
                               {"zebra": text})["texts"].iloc[0]
    other = ablation_effects(terms, Ablation(((0, 0),)), weights, [0, 1] * 12, ["a", "b"],
                             {"zebra": text})["texts"].iloc[0]
    assert planted["spread_ablated"] < 0.5 * planted["spread"]
    assert planted["spread_drop"] > 3 * abs(other["spread_drop"])


def test_ablation_store_writes_atomically(tmp_path, monkeypatch):
    import pandas as pd

    from clipsvd.runs import Run

    run = Run("r1", {}, {}, path=tmp_path)
    store = AblationStore(run)
    result = AblationResult(Ablation(((1, 0),), (), "hand-picked"), pd.DataFrame([{"a": 1.0}]),
                            pd.DataFrame([{"b": 2}]), pd.DataFrame([{"c": "x"}]))
    store.save("k", result)
    back = store.load("k")
    assert back.ablation.heads == ((1, 0),) and back.overall["a"].iloc[0] == 1.0

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("json.dump", broken)
    with pytest.raises(OSError):
        store.save("k2", result)
    assert sorted(p.name for p in store.root.iterdir()) == ["ablation-k.json"]  # nothing half-written


def test_a_run_whose_data_is_gone_is_refused_with_the_path(tmp_path):
    from clipsvd.analysis.ablation import check_evaluation_data
    from clipsvd.runs import Run

    gone = tmp_path / "my-data"
    run = Run("r1", {"dataset": {"kind": "imagefolder", "name": "x", "root": str(gone)}}, {})
    with pytest.raises(DataError, match=str(gone)):
        check_evaluation_data(run)


def test_attention_pooled_towers_are_refused_by_name(tiny):
    tiny.model.visual.attn_pool = torch.nn.Identity()
    with pytest.raises(ConfigError, match="attentional pooling"):
        tower_shape(tiny)


# ----- spatial --------------------------------------------------------------------------------------------

def test_spatial_terms_sum_to_the_per_head_terms(tiny, images):
    per_head = direct_contributions(tiny, images, [0, 1])
    spatial = direct_contributions(tiny, images, [0, 1], spatial=True)
    assert spatial.heads.shape == (4, 2, 17, 2, per_head.heads.shape[-1]) and spatial.grid == (4, 4)
    assert (spatial.heads.sum(2) - per_head.heads).abs().max() <= 1e-5
    assert (spatial.heads.sum((1, 2, 3)) + spatial.rest - spatial.embedding).abs().max() <= 1e-5


def test_ablation_terms_cost_fewer_flops_than_a_plain_evaluation_pass():
    """Issue 21's cost bound (ablation ≤ 2× an evaluation pass) in a form a shared CPU cannot blur: the
    decomposition of every head and MLP of ViT-B/16 recomputes the forward pass, but its last block runs on the
    class token alone, which saves more than the per-head terms and their projections add."""
    from clipsvd.models import ModelSpec, load_model

    loaded = load_model(ModelSpec("ViT-B-16"), "cpu")
    loaded.model.eval()
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused attention op is invisible to the flop counter
    try:
        with torch.no_grad():
            plain = count_flops(lambda: loaded.encode_image(images))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    terms = count_flops(lambda: collect_terms(loaded, [images]))
    assert plain > 30e9  # ViT-B/16 at 224 px: ~35 GFLOP an image (the counter saw the attention, too)
    assert terms < plain, (terms, plain)


def test_spatial_terms_are_chunked_without_changing_them(tiny, images, monkeypatch):
    whole = direct_contributions(tiny, images, [1], spatial=True)
    monkeypatch.setattr("clipsvd.analysis.decomposition.SPATIAL_CHUNK_BYTES", 1)  # one image at a time
    chunked = direct_contributions(tiny, images, [1], spatial=True)
    assert (whole.heads - chunked.heads).abs().max() <= 1e-6


def test_patch_maps_add_up_to_the_head_along_the_text(tiny, images):
    direction = F.normalize(torch.randn(2, 64), dim=-1)
    maps = patch_maps(tiny, images, 1, 0, direction, batch_size=3)
    per_head = direct_contributions(tiny, images, [1]).heads[:, 0, 0] @ direction.t()
    assert maps.maps.shape == (4, 2, 4, 4) and maps.grid_text() == "4 × 4 patch grid"
    assert (maps.maps.sum((2, 3)) + maps.class_token - per_head).abs().max() <= 1e-5
    with pytest.raises(ConfigError, match="heads 0..1"):
        patch_maps(tiny, images, 1, 5, direction)


def test_pointing_game_and_mass_on_a_synthetic_map():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :4, :4] = True  # image 0: the object fills the top-left patch of a 2 × 2 grid
    masks[1, :2, :] = True  # image 1: the top quarter rows
    maps = torch.tensor([[[5.0, 1.0], [0.0, -3.0]], [[0.0, 2.0], [1.0, 1.0]]])
    score = score_maps(maps, masks)
    # image 0: top patch (0,0) fully inside -> 1; image 1: top patch (0,1) half inside -> 0.5
    assert score.pointing == pytest.approx(0.75)
    # mass: image 0: 5 / (5 + 1) inside; image 1: 2·0.5 / (2 + 1 + 1)
    assert score.mass_in_mask == pytest.approx((5 / 6 + 1 / 4) / 2)
    assert score.chance == pytest.approx((16 / 64 + 16 / 64) / 2)
    assert mask_share_per_patch(masks, (2, 2))[1].tolist() == [[0.5, 0.5], [0.0, 0.0]]
    with pytest.raises(ConfigError, match="do not tile"):
        mask_share_per_patch(np.zeros((1, 7, 7), bool), (2, 2))


def test_cli_ablate_heads_top_and_match(tmp_path, capsys):
    import pandas as pd

    from clipsvd.cli import main
    from clipsvd.runs import RunStore

    runs = str(tmp_path / "runs")
    # the tiny model on Animal Shape (read from a file, not rendered): seconds, not a minute
    assert main(["--runs-dir", runs, "train", "--method", "clip-svd", "--arch", "clipsvd-tiny", "--shots", "1",
                 "--dataset", "animal-shape", "--epochs", "1", "--lr", "0.05", "--max-test-per-class", "2",
                 "--device", "cpu"]) == 0
    run = RunStore(runs).list()[0]
    common = ["--images-per-class", "2", "--top-k", "2", "--device", "cpu", "--corpus", "world"]
    out = tmp_path / "a"
    assert main(["--runs-dir", runs, "ablate", run.run_id, "--heads", "L1.H0,L0.H1", "--out", str(out), *common]) == 0
    overall = pd.read_csv(out / "ablation_overall.csv")
    assert {"accuracy (pretrained)", "accuracy (fine-tuned)", "drop (fine-tuned)"} <= set(overall.columns)
    assert (out / "ablation_per_class.tex").read_text().startswith("\\begin{table}")
    assert list((run.path / "verification").glob("ablation-*.json"))  # cached in the run folder
    assert main(["--runs-dir", runs, "ablate", run.run_id, "--top", "2", "--out", str(tmp_path / "b"), *common]) == 0
    capsys.readouterr()
    assert main(["--runs-dir", runs, "ablate", run.run_id, "--match", "zzz-nothing", *common]) == 1
    assert "nothing ablated" in capsys.readouterr().out
    assert main(["--runs-dir", runs, "ablate", run.run_id, "--heads", "L7.H0", *common]) == 2
    assert "layers L0..L1 and heads H0..H1" in capsys.readouterr().err


def test_prolip_is_refused_by_name_and_clip_svd_is_not(tiny):
    from clipsvd.analysis.ablation import check_method
    from clipsvd.methods import create_method
    from tests.conftest import PROMPTS

    check_method(create_method("clip-svd").attach(tiny, PROMPTS))  # its features are the sum of the terms
    prolip = create_method("prolip").attach(tiny, PROMPTS)
    with pytest.raises(ConfigError, match="ProLIP changes the image features after the image tower's projection"):
        check_method(prolip)


def test_world_truth_of_a_capped_subset_follows_its_original_rows():
    import dataclasses

    from clipsvd.analysis.ground_truth import world_truth
    from clipsvd.data.world import load_world, world_masks

    data = load_world("world-shape-clean")
    rows = [57, 3, 410, 12]
    subset = dataclasses.replace(data, test=data.test.subset(rows))
    truth = world_truth(subset)
    assert truth.factors["shape"].tolist() == subset.test.labels  # the shape task: factor = label, row by row
    assert (truth.masks == world_masks("world-shape-clean")[rows]).all()
    assert not (truth.masks == world_masks("world-shape-clean")[:4]).all()  # not the first four objects
    twice = dataclasses.replace(data, test=subset.test.subset([2, 0]))  # a subset of a subset keeps positions
    assert (world_truth(twice).masks == world_masks("world-shape-clean")[[410, 57]]).all()
    assert world_truth(dataclasses.replace(data, name="my-folder")) is None  # not the world: no ground truth
