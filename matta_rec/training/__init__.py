"""Training: the MatTA loss and ramp, ``MatTATrainer`` and the online loop.

Public API::

    from matta_rec.training import RunConfig, MatTATrainer, train_run, load_run
    from matta_rec.training import TrainingCallback   # hooks: train_run(..., callbacks=[...])
"""

from matta_rec.training.config import (
    CheckpointConfig,
    DataConfig,
    EarlyStoppingConfig,
    FollowConfig,
    LossConfig,
    MetricsConfig,
    OptimizerConfig,
    PublishConfig,
    RampConfig,
    RunConfig,
    ScheduleConfig,
    ValidationConfig,
)
from matta_rec.utils.lazy import lazy_attributes

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "DistillRamp",
    "EarlyStoppingConfig",
    "FollowConfig",
    "LoadedRun",
    "LossConfig",
    "MatTALoss",
    "MatTATrainer",
    "MetricsConfig",
    "OptimizerConfig",
    "PublishConfig",
    "RampConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainingCallback",
    "TrainingInfo",
    "ValidationConfig",
    "ValidationMonitor",
    "WarmupDecay",
    "load_run",
    "train_run",
]

# TensorFlow-backed parts load on first use, so importing the config
# (e.g. for `matta-rec train --help`) stays cheap.
_LAZY = {
    "DistillRamp": "matta_rec.training.losses",
    "MatTALoss": "matta_rec.training.losses",
    "MatTATrainer": "matta_rec.training.trainer",
    "train_run": "matta_rec.training.loop",
    "TrainingCallback": "matta_rec.training.callbacks",
    "TrainingInfo": "matta_rec.training.callbacks",
    "ValidationMonitor": "matta_rec.training.validation",
    "WarmupDecay": "matta_rec.training.schedules",
    "LoadedRun": "matta_rec.training.run_dir",
    "load_run": "matta_rec.training.run_dir",
}


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
