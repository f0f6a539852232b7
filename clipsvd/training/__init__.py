"""Training loop, evaluation and the experiment runner."""
from clipsvd.training.evaluate import accuracy_report, harmonic_mean, hm_summary, predict
from clipsvd.training.experiment import (
    ExperimentConfig,
    PreparedData,
    evaluate_method,
    prepare_data,
    restore_run,
    run_experiment,
)
from clipsvd.training.loop import CANCELLED, COMPLETED, DIVERGED, Progress, TrainResult, train

__all__ = [
    "CANCELLED", "COMPLETED", "DIVERGED", "ExperimentConfig", "PreparedData", "Progress", "TrainResult",
    "accuracy_report", "evaluate_method", "harmonic_mean", "hm_summary", "predict", "prepare_data", "restore_run",
    "run_experiment", "train",
]
