"""A Hugging Face ``transformers`` DPT directory loads into our DPT and computes the same thing.

Small random ``transformers`` models are saved with ``save_pretrained`` and loaded with
``load_model(dir)``; outputs are compared in float64 (and once in float32).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dpt_ros.model import DPT, WeightsError, create_model, load_model
from dpt_ros.model.hf import dpt_config_from_hf

transformers = pytest.importorskip("transformers")

REL_TOL_FLOAT64 = 1e-10  # measured ~1e-14: only the float64 op order differs
REL_TOL_FLOAT32 = 1e-4

VIT = {
    "hidden_size": 64,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "image_size": 64,
    "backbone_out_indices": [1, 2, 4, 5],
    "neck_hidden_sizes": [16, 32, 64, 64],
    "fusion_hidden_size": 32,
}
# A small BiT stem: GroupNorm(32) needs every width to be a multiple of 32.
HYBRID = {
    **VIT,
    "is_hybrid": True,
    "reassemble_factors": [1, 1, 1, 0.5],
    "neck_hidden_sizes": [128, 256, 64, 64],
    "backbone_featmap_shape": [1, 512, 4, 4],
    "backbone_config": {
        "depths": [1, 1, 2],
        "hidden_sizes": [128, 256, 512, 1024],
        "embedding_size": 32,
        "layer_type": "bottleneck",
        "global_padding": "SAME",
        "embedding_dynamic_padding": True,
        "out_features": ["stage1", "stage2", "stage3"],
    },
}
SEGMENTATION = {"use_batch_norm_in_fusion_residual": True, "num_labels": 5}


def _save_random_hf(tmp_path: Path, head: str, **settings) -> tuple[torch.nn.Module, Path]:
    """A transformers DPT with every weight random (HF zero-initialises cls/pos embeddings)."""
    cls = getattr(transformers, head)
    torch.manual_seed(0)
    model = cls(transformers.DPTConfig(**settings)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
    directory = tmp_path / "hf"
    model.save_pretrained(directory)
    return model, directory


def _hf_output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values=x)
    return out.logits if hasattr(out, "logits") else out.predicted_depth


def _hf_vit_depth_any_grid(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """DPTForDepthEstimation.forward with the token grid passed to its neck.

    transformers' forward passes the grid only for non-ViT backbones and otherwise assumes a
    square one, so for non-square inputs its own modules are driven the same way by hand.
    """
    config = model.config
    hidden = model.dpt(x, output_hidden_states=True).hidden_states[1:]
    taps = [h for i, h in enumerate(hidden) if i in config.backbone_out_indices]
    grid = (x.shape[-2] // config.patch_size, x.shape[-1] // config.patch_size)
    return model.head(model.neck(taps, *grid))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("readout", ["project", "add", "ignore"])
def test_vit_depth_matches_transformers(tmp_path: Path, readout: str) -> None:
    hf_model, directory = _save_random_hf(
        tmp_path, "DPTForDepthEstimation", readout_type=readout, **VIT
    )
    ours = load_model(directory)
    assert isinstance(ours, DPT) and not ours.training
    assert ours.config.hooks == (1, 2, 4, 5) and ours.config.layer_norm_eps == 1e-12
    assert ours.output_semantics == "relative_inverse_depth"
    hf_model, ours = hf_model.double(), ours.double()
    torch.manual_seed(1)
    square = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert _rel_err(ours(square), _hf_output(hf_model, square)) < REL_TOL_FLOAT64
        # The by-hand forward is transformers' own on a square input ...
        assert torch.equal(_hf_vit_depth_any_grid(hf_model, square), _hf_output(hf_model, square))
        # ... and gives the reference for non-square ones.
        for shape in ((1, 3, 64, 128), (2, 3, 96, 32)):
            x = torch.randn(*shape, dtype=torch.float64)
            assert _rel_err(ours(x), _hf_vit_depth_any_grid(hf_model, x)) < REL_TOL_FLOAT64


def test_vit_depth_matches_transformers_in_float32(tmp_path: Path) -> None:
    hf_model, directory = _save_random_hf(tmp_path, "DPTForDepthEstimation", **VIT)
    ours = load_model(directory)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert _rel_err(ours(x), _hf_vit_depth_any_grid(hf_model, x)) < REL_TOL_FLOAT32


def test_vit_segmentation_matches_transformers(tmp_path: Path) -> None:
    hf_model, directory = _save_random_hf(
        tmp_path, "DPTForSemanticSegmentation", **VIT, **SEGMENTATION
    )
    ours = load_model(directory)
    assert ours.output_semantics == "labels" and ours.config.num_classes == 5
    assert torch.equal(
        ours.state_dict()["auxlayer.4.weight"],
        hf_model.state_dict()["auxiliary_head.head.4.weight"],
    )
    hf_model, ours = hf_model.double(), ours.double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert _rel_err(ours(x), _hf_output(hf_model, x)) < REL_TOL_FLOAT64


@pytest.mark.parametrize(
    ("head", "extra"),
    [("DPTForDepthEstimation", {}), ("DPTForSemanticSegmentation", SEGMENTATION)],
)
def test_hybrid_matches_transformers(tmp_path: Path, head: str, extra: dict) -> None:
    hf_model, directory = _save_random_hf(tmp_path, head, **HYBRID, **extra)
    ours = load_model(directory)
    assert ours.config.backbone == "hybrid" and ours.config.hooks == (0, 1, 4, 5)
    assert ours.config.resnet_layers == (1, 1, 2)
    hf_model, ours = hf_model.double(), ours.double()
    # transformers' hybrid embeddings accept only the configured image size.
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert _rel_err(ours(x), _hf_output(hf_model, x)) < REL_TOL_FLOAT64


def test_hf_directory_through_create_model(tmp_path: Path) -> None:
    _, directory = _save_random_hf(tmp_path, "DPTForDepthEstimation", **VIT)
    with pytest.raises(WeightsError, match="does not fit model 'dpt_base'.*missing keys"):
        create_model("dpt_base", directory)


def _config(**changes) -> dict:
    return {"model_type": "dpt", "architectures": ["DPTForDepthEstimation"], **VIT, **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden_act": "relu"}, "hidden_act='relu' \\(needs 'gelu'\\)"),
        ({"add_projection": True}, "add_projection=True"),
        ({"reassemble_factors": [4, 2, 1, 1]}, "reassemble_factors="),
        ({"backbone_config": {"model_type": "dinov2"}}, "its backbone is 'dinov2'"),
        ({"architectures": ["DPTModel"]}, "a bare DPTModel has no head"),
        ({"image_size": [64, 96]}, "image_size=\\[64, 96\\] is not square"),
        ({"use_bias_in_fusion_residual": False}, "use_bias_in_fusion_residual=False"),
    ],
)
def test_unsupported_configs_are_named(changes: dict, message: str) -> None:
    with pytest.raises(WeightsError, match=message):
        dpt_config_from_hf(_config(**changes))


def test_directory_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_config()))
    with pytest.raises(WeightsError, match="has no weights: expected one of model.safetensors"):
        load_model(tmp_path)
