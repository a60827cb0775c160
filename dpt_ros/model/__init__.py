"""The DPT network (Ranftl et al., ICCV 2021) and its released checkpoints.

``build_model(name)`` gives a randomly initialised network (no download);
``load_model(source)`` gives one with weights (registry name, checkpoint path or URL, or a
Hugging Face ``transformers`` DPT directory); ``create_model(model, weights)`` is the one factory
that front ends use, and also accepts ``package.module:callable`` plug-ins.
"""

from typing import Any

from dpt_ros.model.dpt import DPT, MODEL_NAMES, DPTConfig, build_model, model_config

# Loading pulls in the download, hashing and format code; building a network should not.
_LAZY = {
    "create_model": "dpt_ros.model.factory",
    "load_model": "dpt_ros.model.weights",
    "WeightsError": "dpt_ros.model.weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dpt_ros.model' has no attribute {name!r}")


__all__ = [
    "DPT",
    "DPTConfig",
    "MODEL_NAMES",
    "WeightsError",
    "build_model",
    "create_model",
    "load_model",
    "model_config",
]
