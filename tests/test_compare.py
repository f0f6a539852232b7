"""Compare's honesty rules: a best method only when the spreads separate, no ± for a single seed."""
import pandas as pd
import pytest

from clipsvd.runs import clear_best, mean_std_text


def summary(rows: list[tuple[str, float, float, int]]) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "accuracy_mean": mean, "accuracy_std": std, "n": n} for m, mean, std, n in rows])


def test_a_best_method_needs_separated_spreads():
    assert clear_best(summary([("a", 11.25, 1.06, 3), ("b", 10.50, 0.4, 3)]), "accuracy")[0] is None
    best, why = clear_best(summary([("a", 20.0, 1.0, 3), ("b", 10.0, 2.0, 3), ("c", 15.0, 3.0, 3)]), "accuracy")
    assert best == "a" and "19.00" in why
    assert clear_best(summary([("a", 20.0, float("nan"), 1), ("b", 10.0, float("nan"), 1)]), "accuracy")[0] is None
    assert clear_best(summary([("a", 20.0, 1.0, 3)]), "accuracy")[0] is None


def test_one_seed_prints_no_spread():
    assert mean_std_text(pd.Series({"accuracy_mean": 12.5, "accuracy_std": 0.0, "n": 1}), "accuracy") == "12.50"
    assert mean_std_text(pd.Series({"accuracy_mean": 12.5, "accuracy_std": 0.5, "n": 2}), "accuracy") == "12.50 ± 0.50"


# ----- one seed: no ± and no error bars; every number says on what it was measured -----------------------

def runs_table(rows: list[tuple[str, int, float]], n_test: int = 16, n_split: int | None = 800) -> pd.DataFrame:
    from clipsvd.formatting import test_images_text

    return pd.DataFrame([{"run_id": f"{m}{s}", "status": "completed", "method": m, "dataset": "d",
                          "protocol": "few-shot", "shots": 1, "seed": s, "accuracy": acc, "base": None, "novel": None,
                          "n_test": n_test,
                          "n_test_split": n_split, "test_images": test_images_text(n_test, n_split)}
                         for m, s, acc in rows])


def test_one_seed_group_has_no_spread_in_the_aggregate_and_says_one_seed():
    from clipsvd.runs import compare_methods
    from clipsvd.runs.aggregate import seeds_text

    summary = compare_methods(runs_table([("a", 1, 40.0), ("b", 1, 50.0), ("b", 2, 60.0)])).set_index("method")
    assert summary.loc["a", "n"] == 1 and pd.isna(summary.loc["a", "accuracy_std"])  # not 0: no spread is known
    assert mean_std_text(summary.loc["a"], "accuracy") == "40.00" and seeds_text(summary.loc["a", "n"]) == "1 seed"
    assert mean_std_text(summary.loc["b"], "accuracy") == f"55.00 ± {pd.Series([50.0, 60.0]).std():.2f}"
    assert seeds_text(2) == "2 seeds"
    assert summary.loc["a", "test_images"] == "16 of 800"


def test_method_bars_draw_error_bars_only_for_two_or_more_seeds():
    from clipsvd.plots.compare import method_bars
    from clipsvd.runs import compare_methods

    one_each = compare_methods(runs_table([("a", 1, 40.0), ("b", 1, 50.0)]))
    fig = method_bars(one_each, ["accuracy"], subtitle="16 of 800 test images")
    assert all(trace.error_y.array is None for trace in fig.data)  # before: zero-length bars on every method
    assert "±" not in fig.layout.title.text and "1 seed" in fig.layout.title.text
    assert fig.layout.title.subtitle.text == "16 of 800 test images"
    mixed = compare_methods(runs_table([("a", 1, 40.0), ("b", 1, 50.0), ("b", 2, 60.0)]))
    fig = method_bars(mixed, ["accuracy"])
    [spread] = [t for t in fig.data if t.error_y.array is not None]
    assert list(spread.x) == ["b"] and spread.error_y.array[0] == pytest.approx(pd.Series([50.0, 60.0]).std())
    assert {t.offsetgroup for t in fig.data} == {"accuracy"}  # the one-seed bar sits in the same slot
    assert list(fig.layout.xaxis.categoryarray) == ["a", "b"]


def test_test_images_say_n_of_n_and_never_guess_the_split_size():
    from clipsvd.formatting import test_images_text
    from clipsvd.runs.aggregate import evaluated_images, measured_on_text

    assert evaluated_images({"n_test_all": 160, "n_test_split_all": 800}) == (160, 800)
    assert evaluated_images({"n_test_base": 80, "n_test_split_base": 400, "n_test_novel": 80,
                             "n_test_split_novel": 400}) == (160, 800)
    assert evaluated_images({"n_test_all": 160}, {"max_test_per_class": 20}) == (160, None)  # older run, capped
    assert evaluated_images({"n_test_all": 800}, {"max_test_per_class": None}) == (800, 800)  # no cap: all of them
    assert evaluated_images({}, {}) == (None, None)
    assert test_images_text(1600, 8000) == "1,600 of 8,000" and test_images_text(160, None) == "160 of ?"
    assert test_images_text(None, 800) == "—"
    assert "subset" in measured_on_text(runs_table([("a", 1, 40.0)]))
    assert "whole test split" in measured_on_text(runs_table([("a", 1, 40.0)], n_test=800, n_split=800))
    assert "not recorded" in measured_on_text(runs_table([("a", 1, 40.0)], n_split=None))


def test_history_train_accuracy_is_shown_in_percent_in_table_and_figure_alike():
    from clipsvd.plots.training import history_figure
    from clipsvd.runs.aggregate import history_table

    stored = [{"epoch": 1, "loss": 2.0, "train_accuracy": 0.125}, {"epoch": 2, "loss": 1.5, "train_accuracy": 0.5}]
    table = history_table(stored)
    assert list(table["train_accuracy_pct"]) == [12.5, 50.0] and "train_accuracy" not in table
    assert stored[0]["train_accuracy"] == 0.125  # the stored history is left as it is
    assert list(history_table(table)["train_accuracy_pct"]) == [12.5, 50.0]  # converted once
    [accuracy] = [t for t in history_figure(pd.DataFrame(stored)).data if "accuracy" in t.name]
    assert list(accuracy.y) == [12.5, 50.0]
