"""The DPT network: the authors' state-dict layout, their numerics, and the variant table."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dpt_ros.model.dpt import DPT, MODEL_NAMES, DPTConfig, build_model, model_config
from dpt_ros.model.heads import InverseDepthToMetric

MANIFEST_VARIANTS = ("dpt_base", "dpt_large", "dpt_hybrid", "dpt_hybrid_ade20k")
LARGE = ("dpt_large", "dpt_large_ade20k")
# Small enough for two shared CPU cores, large enough to exercise non-square grids.
SMALL_SIZES = ((32, 32), (64, 96))

# A scaled-down ViT DPT, for behaviour that does not depend on the released sizes.
TINY = DPTConfig(
    embed_dim=64,
    depth=4,
    num_heads=4,
    hooks=(0, 1, 2, 3),
    stage_channels=(16, 32, 64, 64),
    features=32,
    depth_head_hidden=8,
    vit_num_classes=0,
)
TINY_HYBRID = dataclasses.replace(
    TINY,
    backbone="hybrid",
    stage_channels=(128, 256, 64, 64),
    resnet_layers=(1, 1, 1),
    resnet_channels=(128, 256, 256),
    resnet_stem_channels=32,
)


def load_manifest(reference_dir: Path, variant: str) -> dict:
    return json.loads((reference_dir / f"{variant}_keys.json").read_text())


def shapes_of(entries: list[dict]) -> dict[str, tuple[int, ...]]:
    return {e["name"]: tuple(e["shape"]) for e in entries}


def meta_model(name: str, **overrides: object) -> DPT:
    with torch.device("meta"):
        return build_model(name, **overrides)


def state_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def reference(reference_dir: Path):
    """fill.py and check_against.py from the reference directory, the seed-0 fill of
    DPT-Hybrid, its stored inputs / outputs and meta.json."""
    sys.path.insert(0, str(reference_dir))
    try:
        fill = importlib.import_module("fill")
        check = importlib.import_module("check_against")
    finally:  # check_against puts its own directory on sys.path too
        while str(reference_dir) in sys.path:
            sys.path.remove(str(reference_dir))
    keys = load_manifest(reference_dir, "dpt_hybrid")
    meta = json.loads((reference_dir / "dpt_hybrid" / "meta.json").read_text())
    manifest = [(e["name"], tuple(e["shape"]), e["dtype"]) for e in keys["entries"]]
    arrays = fill.fill_arrays(manifest, seed=meta["fill"]["seed"])
    assert check.fill_digest(arrays) == keys["fill_sha256"], "fill.py / numpy stream changed"
    cases = [
        (
            np.load(reference_dir / "dpt_hybrid" / info["input_file"]),
            np.load(reference_dir / "dpt_hybrid" / info["stored"]["full"]["file"]),
        )
        for info in meta["inputs"]
    ]
    return {"arrays": arrays, "cases": cases, "meta": meta}


def filled_hybrid(reference: dict, dtype: torch.dtype, **overrides: object) -> DPT:
    model = meta_model("dpt_hybrid", **overrides).to_empty(device="cpu").to(dtype)
    state = {
        k: torch.from_numpy(a) if a.dtype == np.int64 else torch.from_numpy(a).to(dtype)
        for k, a in reference["arrays"].items()
    }
    model.load_state_dict(state, strict=True)
    return model.eval()


def max_relative_error(model: DPT, x: np.ndarray, ref: np.ndarray, dtype: torch.dtype) -> float:
    with torch.no_grad():
        out = model(torch.from_numpy(x).to(dtype)).double().numpy()
    assert out.shape == ref.shape
    return float(np.abs(out - ref).max() / np.abs(ref).max())


# --- state dict layout -------------------------------------------------------------------


@pytest.mark.parametrize("variant", MANIFEST_VARIANTS)
def test_state_dict_matches_authors_manifest(reference_dir: Path, variant: str) -> None:
    manifest = load_manifest(reference_dir, variant)["entries"]
    model = meta_model(variant)
    own = model.state_dict()
    assert list(own) == [e["name"] for e in manifest]  # same keys, same order
    assert state_shapes(model) == shapes_of(manifest)
    for entry in manifest:
        assert str(own[entry["name"]].dtype).removeprefix("torch.") == entry["dtype"]


def test_large_ade20k_is_large_with_the_hybrid_segmentation_head(reference_dir: Path) -> None:
    large = shapes_of(load_manifest(reference_dir, "dpt_large")["entries"])
    hybrid = shapes_of(load_manifest(reference_dir, "dpt_hybrid")["entries"])
    hybrid_seg = shapes_of(load_manifest(reference_dir, "dpt_hybrid_ade20k")["entries"])
    # What segmentation changes in DPT-Hybrid: head, auxiliary head, BN (no bias) in fusion.
    removed = set(hybrid) - set(hybrid_seg)
    changed = {k: s for k, s in hybrid_seg.items() if hybrid.get(k) != s}
    assert removed and changed
    assert all(k.startswith(("scratch.", "auxlayer.")) for k in removed | set(changed))
    expected = {k: s for k, s in large.items() if k not in removed} | changed
    assert state_shapes(meta_model("dpt_large_ade20k")) == expected


def test_parameter_count_matches_reference(reference: dict) -> None:
    model = meta_model("dpt_hybrid")
    assert sum(p.numel() for p in model.parameters()) == reference["meta"]["n_parameters"]


# --- numerics against the authors' code --------------------------------------------------


@pytest.mark.slow
def test_hybrid_matches_reference_float64(reference: dict) -> None:
    model = filled_hybrid(reference, torch.float64)
    for x, ref in reference["cases"]:
        assert max_relative_error(model, x, ref, torch.float64) <= 1e-9, x.shape


def test_hybrid_matches_reference_float32(reference: dict) -> None:
    model = filled_hybrid(reference, torch.float32)
    for x, ref in reference["cases"]:
        assert max_relative_error(model, x, ref, torch.float32) <= 1e-3, x.shape


def test_legacy_std_conv_reproduces_the_timm_0_4_difference(reference: dict) -> None:
    # The reference generator measured how far timm 0.4.x's weight standardisation moves the
    # output (its meta.json "extras"); the legacy option must land on the same number.
    model = filled_hybrid(reference, torch.float32, legacy_std_conv=True)
    x, ref = reference["cases"][1]
    expected = reference["meta"]["extras"]["legacy_stdconv_timm045_input1_relerr"]
    assert max_relative_error(model, x, ref, torch.float32) == pytest.approx(expected, rel=0.1)


# --- the variant table -------------------------------------------------------------------


def test_variant_semantics() -> None:
    assert {name: model_config(name).output_semantics for name in MODEL_NAMES} == {
        "dpt_base": "relative_inverse_depth",
        "dpt_large": "relative_inverse_depth",
        "dpt_hybrid": "relative_inverse_depth",
        "dpt_hybrid_ade20k": "labels",
        "dpt_large_ade20k": "labels",
        "dpt_hybrid_kitti": "metric_depth",
        "dpt_hybrid_nyu": "metric_depth",
    }
    assert model_config("dpt_large").hooks == (5, 11, 17, 23)
    assert model_config("dpt_base").hooks == (2, 5, 8, 11)
    assert model_config("dpt_hybrid").hooks == (0, 1, 8, 11)
    assert meta_model("dpt_hybrid_nyu").output_semantics == "metric_depth"


@pytest.mark.parametrize("name", LARGE)
def test_large_variants_shapes_on_meta_device(name: str) -> None:
    model = meta_model(name).eval()
    for height, width in SMALL_SIZES:
        out = model(torch.empty(2, 3, height, width, device="meta"))
        channels = (150,) if name.endswith("ade20k") else ()
        assert out.shape == (2, *channels, height, width)


@pytest.fixture(scope="module")
def hybrid_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("dpt_hybrid").state_dict()


def built(name: str, hybrid_state: dict[str, torch.Tensor]) -> DPT:
    if name in ("dpt_hybrid", "dpt_hybrid_kitti", "dpt_hybrid_nyu"):
        model = meta_model(name).to_empty(device="cpu")
        model.load_state_dict(hybrid_state, strict=True)
    else:
        torch.manual_seed(0)
        model = build_model(name)
    return model.eval()


METRIC = {"dpt_hybrid_kitti": (0.00006016, 0.00579), "dpt_hybrid_nyu": (0.000305, 0.1378)}


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n not in LARGE])
def test_variant_runs_square_and_non_square_batches(name: str, hybrid_state) -> None:
    model = built(name, hybrid_state)
    decoded: list[torch.Tensor] = []  # the head's output, before any metric conversion
    model.scratch.register_forward_hook(lambda module, args, out: decoded.append(out))
    for height, width in SMALL_SIZES:
        x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            out = model(x)
        relative = decoded.pop().squeeze(1)
        assert torch.isfinite(out).all()
        if model.output_semantics == "labels":
            assert out.shape == (2, 150, height, width)
            continue
        assert out.shape == (2, height, width)
        assert (relative >= 0).all()
        if name in METRIC:  # metres = 1 / (scale * relative + shift), the authors' constants
            scale, shift = METRIC[name]
            torch.testing.assert_close(out, 1.0 / (scale * relative + shift))
            assert out.min() > 0
        else:
            torch.testing.assert_close(out, relative, rtol=0, atol=0)


def test_inverse_depth_is_clamped_like_the_authors() -> None:
    to_metric = InverseDepthToMetric(scale=1.0, shift=0.0)
    out = to_metric(torch.tensor([-2.0, 0.0, 1e-9, 0.5], dtype=torch.float64))
    assert out.tolist() == pytest.approx([1e8, 1e8, 1e8, 2.0])


# --- behaviour on scaled-down configurations ----------------------------------------------


@pytest.mark.parametrize("readout", ["ignore", "add", "project"])
def test_readout_variants(readout: str) -> None:
    model = DPT(dataclasses.replace(TINY, readout=readout)).eval()
    keys = model.state_dict()
    assert ("pretrained.act_postprocess1.0.project.0.weight" in keys) == (readout == "project")
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 64, 96)


def test_batch_equals_single_images() -> None:
    torch.manual_seed(0)
    model = DPT(TINY_HYBRID).double().eval()
    x = torch.randn(3, 3, 96, 64, dtype=torch.float64)
    with torch.no_grad():
        batch = model(x)
        singles = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, singles, rtol=1e-10, atol=1e-12)


def test_position_embedding_cache_follows_the_parameter() -> None:
    torch.manual_seed(0)
    model = DPT(TINY).eval()
    keys_before = set(model.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        model(x)
        model(torch.randn(1, 3, 96, 64))
    assert set(model.state_dict()) == keys_before  # the cache is not state
    # New weights (load_state_dict copies in place) must not meet a stale cache entry.
    other = DPT(TINY).eval()
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), other(x), rtol=0, atol=0)
    # Nor must a dtype change.
    model.double()
    other.double()
    with torch.no_grad():
        torch.testing.assert_close(model(x.double()), other(x.double()), rtol=0, atol=0)


def test_gradients_reach_the_position_embedding() -> None:
    model = DPT(TINY).train()
    for _ in range(2):  # a second step must not reuse a graph freed by the first
        model.zero_grad()
        x = torch.randn(2, 3, 32, 64)
        loss = model(x).mean() + sum(f.square().mean() for f in model.pretrained(x))
        loss.backward()
        assert model.pretrained.model.pos_embed.grad.abs().sum() > 0


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3, 64, 80), "multiples of 32"),
        ((1, 3, 48, 64), "multiples of 32"),
        ((3, 64, 64), r"\(N, 3, H, W\)"),
        ((1, 4, 64, 64), r"\(N, 3, H, W\)"),
    ],
)
def test_bad_input_shape_is_rejected(shape: tuple[int, ...], message: str) -> None:
    model = DPT(TINY).eval()
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"readout": "cls"}, "readout"),
        ({"task": "detection"}, "task"),
        ({"backbone": "swin"}, "backbone"),
        ({"hooks": (3, 2, 1, 0)}, "increasing"),
        ({"hooks": (0, 1, 2, 4)}, "below depth"),
        ({"num_heads": 5}, "divisible"),
        ({"patch_size": 8}, "patch_size"),
        ({"metric_scale": 1.0}, "together"),
        ({"task": "segmentation", "metric_scale": 1.0, "metric_shift": 0.0}, "depth models"),
    ],
)
def test_bad_config_is_rejected(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **overrides)


def test_bad_hybrid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="ResNet stages"):
        dataclasses.replace(TINY_HYBRID, hooks=(1, 2, 2, 3))
    with pytest.raises(ValueError, match="stage_channels"):
        dataclasses.replace(TINY_HYBRID, stage_channels=(64, 256, 64, 64))


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unknown DPT model 'dpt_small'.*dpt_hybrid"):
        build_model("dpt_small")
