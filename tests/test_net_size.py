"""The network input size of every variant (issue 10, section 2): the authors' per-model size and
"minimal" resize rule by default, an explicit net_size as an override.

Expected sizes are worked out by hand from MiDaS ``Resize.get_size`` (keep_aspect_ratio=True,
ensure_multiple_of=32, resize_method="minimal"): take the scale (net / image) of the side whose
scale is closer to 1 (ties: the height's) for both sides, then round each side to the nearest
multiple of 32. E.g. the KITTI model (net 352x1216) on raw KITTI 375x1242: scale_w = 1216/1242 =
0.979 is closer to 1 than scale_h = 352/375 = 0.939, so h = 375 * 0.979 = 367.2 -> 352 and
w = 1216.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dpt_ros import transforms
from dpt_ros.config import ConfigError, ModelSettings, parse_parameter_text, settings_from_mapping
from dpt_ros.engine import Engine, EngineConfig
from dpt_ros.model.dpt import MODEL_NAMES, model_config

KITTI_CROP, KITTI_RAW, NYU, WEBCAM = (352, 1216), (375, 1242), (480, 640), (240, 320)

# (height, width) of the network input for KITTI crop, raw KITTI, NYU and webcam frames, by
# hand (see the module docstring).
NET_384 = ((384, 1312), (384, 1280), (384, 512), (288, 384))
# net 352x1216: NYU scale_h 0.733 beats scale_w 1.9 -> w = 640 * 0.733 = 469.3 -> 480
NET_KITTI = ((352, 1216), (352, 1216), (352, 480), (352, 480))
# net 480x640: KITTI crop scale_h 1.364 beats scale_w 0.526 -> w = 1658.2 -> 1664; webcam: both
# scales are 2.0 (a tie takes the height's)
NET_NYU = ((480, 1664), (480, 1600), (480, 640), (480, 640))
# net 480x480: webcam scale_w 1.5 beats scale_h 2.0 -> h = 360 -> 352 (11.25 rounds to 11)
NET_ADE20K = ((480, 1664), (480, 1600), (480, 640), (352, 480))
FRAMES = (KITTI_CROP, KITTI_RAW, NYU, WEBCAM)
EXPECTED = {
    name: dict(zip(FRAMES, sizes, strict=True))
    for name, sizes in {
        "dpt_base": NET_384,
        "dpt_large": NET_384,
        "dpt_hybrid": NET_384,
        "dpt_hybrid_kitti": NET_KITTI,
        "dpt_hybrid_nyu": NET_NYU,
        "dpt_hybrid_ade20k": NET_ADE20K,
        "dpt_large_ade20k": NET_ADE20K,
    }.items()
}


def test_every_variant_has_an_expected_size() -> None:
    assert set(EXPECTED) == set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("frame", [KITTI_CROP, KITTI_RAW, NYU, WEBCAM])
def test_auto_is_the_authors_size_for_every_variant(name: str, frame: tuple[int, int]) -> None:
    rule = transforms.resize_rule("auto", model_config(name))
    assert rule.method == "minimal"
    assert rule.input_size(*frame) == EXPECTED[name][frame]


@pytest.mark.parametrize(
    ("frame", "expected"),
    # lower_bound at 384: scale = max(net / side) for both sides, each side at least 384
    [(KITTI_CROP, (384, 1312)), (KITTI_RAW, (384, 1280)), (NYU, (384, 512)), (WEBCAM, (384, 512))],
)
def test_an_explicit_size_keeps_the_lower_bound_rule(frame, expected) -> None:
    for name in ("dpt_hybrid", "dpt_hybrid_kitti", "dpt_hybrid_ade20k"):
        rule = transforms.resize_rule(384, model_config(name))
        assert (rule.method, rule.input_size(*frame)) == ("lower_bound", expected)


def test_a_plugin_without_its_own_size_gets_384_lower_bound() -> None:
    rule = transforms.resize_rule("auto", nn.Identity())
    assert (rule.net_size, rule.method) == ((384, 384), "lower_bound")


@pytest.mark.parametrize("bad", [100, (352, 1200), "big"])
def test_bad_sizes_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="net_size"):
        transforms.resize_rule(bad, nn.Identity())


class ShapeRecorder(nn.Module):
    """A stand-in depth model that states the KITTI model's size and records its input."""

    net_size = (352, 1216)
    resize_method = "minimal"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return x.mean(dim=1)


@pytest.mark.parametrize(("net_size", "expected"), [("auto", (352, 1216)), (64, (64, 224))])
def test_the_engine_feeds_the_model_its_own_size(net_size, expected) -> None:
    model = ShapeRecorder()
    engine = Engine(EngineConfig(model=None, net_size=net_size), depth_model=model)
    # auto: raw KITTI -> the model's (352, 1216); 64: 64x212 -> (64, 212 -> 224) lower bound
    rgb = np.zeros((375, 1242, 3) if net_size == "auto" else (64, 212, 3), np.uint8)
    pred = engine.infer(rgb)
    assert model.seen == [(1, 3, *expected)]
    assert pred.depth.shape == rgb.shape[:2]


def test_settings_default_to_auto_and_accept_the_word() -> None:
    assert ModelSettings().net_size == 0
    assert ModelSettings().engine_config().net_size == "auto"
    assert parse_parameter_text("net_size", "auto") == 0
    assert settings_from_mapping({"net_size": "auto"}).model.net_size == 0
    assert settings_from_mapping({"net_size": 512}).model.engine_config().net_size == 512
    with pytest.raises(ConfigError, match="'net_size'.*multiple of 32"):
        settings_from_mapping({"net_size": 500})
