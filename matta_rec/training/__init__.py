"""Training: the MatTA loss and ramp, ``MatTATrainer`` and the online loop.

Public API::

    from matta_rec.training import RunConfig, MatTATrainer, train_run, load_run
"""

from matta_rec.training.config import (
    CheckpointConfig,
    DataConfig,
    DebugConfig,
    LossConfig,
    MetricsConfig,
    OptimizerConfig,
    RampConfig,
    RunConfig,
)

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "DebugConfig",
    "DistillRamp",
    "LoadedRun",
    "LossConfig",
    "MatTALoss",
    "MatTATrainer",
    "MetricsConfig",
    "OptimizerConfig",
    "RampConfig",
    "RunConfig",
    "load_run",
    "train_run",
]

_LAZY = {
    "DistillRamp": "matta_rec.training.losses",
    "MatTALoss": "matta_rec.training.losses",
    "MatTATrainer": "matta_rec.training.trainer",
    "train_run": "matta_rec.training.loop",
    "LoadedRun": "matta_rec.training.run_dir",
    "load_run": "matta_rec.training.run_dir",
}


def __getattr__(name):
    # TensorFlow-backed parts load on first use, so importing the config
    # (e.g. for `matta-rec train --help`) stays cheap.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'matta_rec.training' has no attribute {name!r}")
