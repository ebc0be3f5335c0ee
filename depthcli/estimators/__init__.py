"""Relative depth estimators (Depth-Anything-V2 architecture): train, predict, distill.

Public API (import from the submodules; ``predict`` and ``distill`` are both a
module and a function, so they are not re-exported here)::

    from depthcli.estimators.training import TrainConfig, train_estimator
    from depthcli.estimators.predict import PredictConfig, predict
    from depthcli.estimators.distill import DistillConfig, distill
    from depthcli.estimators.models import PRESETS, build_model, load_model, save_model, predict_disparity

``TrainConfig``, ``train_estimator``, ``PredictConfig``, ``DistillConfig`` and the
model helpers are also available here lazily.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "TrainConfig": "training",
    "train_estimator": "training",
    "PredictConfig": "predict",
    "DistillConfig": "distill",
    "PRESETS": "models",
    "build_model": "models",
    "load_model": "models",
    "save_model": "models",
    "predict_disparity": "models",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        mod = importlib.import_module(f"depthcli.estimators.{_EXPORTS[name]}")
        return getattr(mod, name)
    raise AttributeError(name)
