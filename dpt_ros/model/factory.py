"""``create_model``: the one factory front ends use (DPT variants, checkpoints, plug-ins)."""

from __future__ import annotations

import importlib
import inspect
import os

import torch
from torch import nn

from dpt_ros.model.dpt import MODEL_NAMES, build_model
from dpt_ros.model.weights import (
    OUTPUT_SEMANTICS,
    REGISTRY,
    WeightsError,
    load_model,
    registry_entry,
)

__all__ = ["PluginError", "create_model", "load_plugin"]

RANDOM = "random"
# "random" weights are drawn from this seed, so the same input gives the same output every run
# (DPT-Hybrid with it gives a non-flat depth map; dpt_ros.predict warns when an output is flat).
RANDOM_SEED = 0


class PluginError(WeightsError):
    """A ``package.module:callable`` model plug-in could not be imported, called or used."""


def load_plugin(spec: str, weights: str | None = None) -> nn.Module:
    """Import ``package.module:callable`` and call it (with ``weights=`` when given).

    The callable must return a ``torch.nn.Module`` mapping a normalised (N,3,H,W) batch to
    (N,H,W) or (N,1,H,W) relative inverse depth; ``output_semantics`` defaults to that.
    """
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise PluginError(f"model plug-in {spec!r} must look like 'package.module:callable'")
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"model plug-in {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise PluginError(
                f"model plug-in {spec!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise PluginError(f"model plug-in {spec!r}: {attr_path!r} is not callable")
    kwargs = {} if weights in (None, "") else {"weights": weights}
    if kwargs:
        try:
            inspect.signature(target).bind(**kwargs)
        except TypeError:
            raise PluginError(
                f"model plug-in {spec!r} takes no 'weights' argument, but weights={weights!r} "
                "was given; leave the weights empty"
            ) from None
        except ValueError:
            pass  # no signature (builtins): let the call itself decide
    module = target(**kwargs)
    if not isinstance(module, nn.Module):
        raise PluginError(
            f"model plug-in {spec!r} returned a {type(module).__name__}, not a torch.nn.Module"
        )
    semantics = getattr(module, "output_semantics", None)
    if semantics is None:
        module.output_semantics = "relative_inverse_depth"
    elif semantics not in OUTPUT_SEMANTICS:
        raise PluginError(
            f"model plug-in {spec!r}: output_semantics {semantics!r} is not one of "
            f"{', '.join(OUTPUT_SEMANTICS)}"
        )
    return module


def create_model(model: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """The network for ``model`` with ``weights``; the result has ``output_semantics`` set.

    ``model``: one of ``MODEL_NAMES`` or ``"package.module:callable"`` (a plug-in).
    ``weights``: ``None``/``""`` -> the released checkpoint of that name (cached download,
    verified); ``"random"`` -> random initialisation from ``RANDOM_SEED`` (the same network
    every time), no download; a registry name, checkpoint
    path, URL or Hugging Face DPT directory -> that, which must fit ``model``'s architecture.
    """
    weights = os.fspath(weights) if weights is not None else None
    if ":" in model:
        return load_plugin(model, weights)
    if model not in MODEL_NAMES:
        raise WeightsError(
            f"unknown model {model!r}: use one of {', '.join(MODEL_NAMES)} or a plug-in "
            "'package.module:callable'"
        )
    if weights == RANDOM:
        # A private RNG state: seeding must not change the caller's random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            return build_model(model).eval()
    if weights in (None, ""):
        if model not in REGISTRY:
            registry_entry(model)  # raises the "no released checkpoint" error
        return load_model(model)
    if weights in REGISTRY and REGISTRY[weights].model != model:
        raise WeightsError(
            f"weights {weights!r} are the checkpoint of {REGISTRY[weights].model!r}, not of "
            f"{model!r}"
        )
    return load_model(weights, model=model)
