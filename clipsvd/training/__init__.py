"""Training loop, evaluation and the experiment runner."""
from clipsvd.runs.metrics import harmonic_mean, hm_summary
from clipsvd.training.evaluate import accuracy_report, predict
from clipsvd.training.experiment import (
    ExperimentConfig,
    PreparedData,
    evaluate_method,
    planned_steps,
    prepare_data,
    resolved_config,
    restore_run,
    run_experiment,
)
from clipsvd.training.loop import Progress, TrainResult, train

__all__ = [
    "ExperimentConfig", "PreparedData", "Progress", "TrainResult",
    "accuracy_report", "evaluate_method", "harmonic_mean", "hm_summary", "planned_steps", "predict", "prepare_data",
    "resolved_config", "restore_run",
    "run_experiment", "train",
]
