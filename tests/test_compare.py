"""Compare's honesty rules: a best method only when the spreads separate, no ± for a single seed."""
import pandas as pd

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
