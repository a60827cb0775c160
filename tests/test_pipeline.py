"""Frame -> Result: alignment, metric depth, clouds and labels against a synthetic scene's truth.

Two kinds of engine: a fake with ``infer()`` returning a fixed Prediction (for the alignment and
cloud maths), and the real Engine with tiny stand-in modules that ignore their input and return
the scene's affine-mapped inverse depth (for the integration path, resizing included).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from dpt_ros.align import AlignConfig
from dpt_ros.engine import Engine, EngineConfig, Prediction
from dpt_ros.geometry import CameraModel
from dpt_ros.pipeline import Frame, Pipeline, PipelineConfig, Result
from dpt_ros.synthetic import Scene, make_relative_prediction, make_scene

WIDTH, HEIGHT = 128, 96
SCALE, SHIFT = 3.7, 0.25  # the stand-in's unknown affine map of the true inverse depth
SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def street() -> Scene:
    # Sky, cars, facades and a LiDAR with 20 % gross outliers: the realistic case.
    return make_scene(WIDTH, HEIGHT, layout="street", seed=1, lidar_outlier_share=0.2)


@pytest.fixture(scope="module")
def planes() -> Scene:
    # Continuous depth everywhere (no sky, no occlusion edges): resizing cannot hurt it.
    return make_scene(WIDTH, HEIGHT, layout="planes", seed=2)


class FakeEngine:
    """Engine stand-in: returns fixed outputs and records what it was asked for."""

    def __init__(
        self,
        depth: np.ndarray | None,
        semantics: str = "relative_inverse_depth",
        labels: np.ndarray | None = None,
    ) -> None:
        self.depth, self.semantics, self.labels = depth, semantics, labels
        self.calls: list[tuple[bool, bool | None]] = []

    def infer(
        self, rgb: np.ndarray, want_depth: bool = True, want_labels: bool | None = None
    ) -> Prediction:
        self.calls.append((want_depth, want_labels))
        return Prediction(
            depth=self.depth.copy() if want_depth else None,
            depth_semantics=self.semantics if want_depth else "none",
            labels=self.labels if want_labels else None,
            timings={"forward": 1.5},
        )


def relative_of(scene: Scene) -> np.ndarray:
    return make_relative_prediction(scene.depth, scale=SCALE, shift=SHIFT, noise=0.0)


def frame_of(
    scene: Scene, stamp_ns: int = SECOND, *, camera: bool = True, lidar: bool = True
) -> Frame:
    return Frame(
        rgb=scene.rgb,
        stamp_ns=stamp_ns,
        frame_id="camera_optical",
        camera=scene.camera if camera else None,
        lidar_points=scene.lidar_points if lidar else None,
        lidar_frame_id="velodyne" if lidar else "",
        lidar_stamp_ns=stamp_ns if lidar else None,
        T_cam_lidar=scene.T_cam_lidar if lidar else None,
    )


def abs_rel(metric: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(AbsRel over pixels known in both, share of finite-truth pixels that got a depth)."""
    truth_known = np.isfinite(truth)
    both = truth_known & np.isfinite(metric)
    error = float(np.mean(np.abs(metric[both] - truth[both]) / truth[both]))
    return error, float(both.sum() / truth_known.sum())


def pinhole_points(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Independent truth for clouds: the pinhole equations pixel by pixel (pixel centres at
    integer u, v; y = (v - cy) / fy, x = (u - cx - skew * y) / fx, times z), NaN where the
    depth is unknown. A second formulation of what backproject_depth does with its ray grid."""
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    height, width = depth.shape
    points = np.full((height, width, 3), np.nan)
    for v in range(height):
        for u in range(width):
            z = float(depth[v, u])
            if np.isfinite(z) and z > 0:
                y = (v - cy) / fy
                x = (u - cx - skew * y) / fx
                points[v, u] = (x * z, y * z, z)
    return points


def relative_errors(metric: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel |metric - truth| / truth where both are known."""
    both = np.isfinite(truth) & np.isfinite(metric)
    return np.abs(metric[both] - truth[both]) / truth[both]


# ---------------------------------------------------------------------------- alignment maths
def test_metric_depth_matches_scene_truth_despite_lidar_outliers(street: Scene) -> None:
    result = Pipeline(FakeEngine(relative_of(street))).process(frame_of(street))
    assert result.fit_status == "tracking" and result.fit is not None and result.fit.ok
    assert result.scale == pytest.approx(1.0 / SCALE, rel=1e-2)
    assert result.shift == pytest.approx(-SHIFT / SCALE, rel=2e-2)
    assert result.metric is not None and result.metric.dtype == np.float32
    error, coverage = abs_rel(result.metric, street.depth)
    assert error < 0.01 and coverage > 0.99
    # Every pixel, not just on average: the stand-in is exact, so only the fit's scale and
    # shift (within 1 % and 2 % above) move a pixel, by at most ~1 %.
    assert relative_errors(result.metric, street.depth).max() < 0.01
    # sky (no depth in the truth) is +Inf, "beyond range" (REP 117), not some huge number
    assert np.isposinf(result.metric[~np.isfinite(street.depth)]).all()
    np.testing.assert_array_equal(result.relative, relative_of(street))
    assert result.lidar_points_used > 1000 and result.raw_fit is result.fit
    assert result.camera is street.camera
    assert result.stamp_ns == SECOND and result.frame_id == "camera_optical"
    assert {"engine", "engine.forward", "project", "fit", "metric", "total"} <= set(result.timings)
    assert result.timings["engine.forward"] == 1.5


def test_depth_limits_of_the_align_config_bound_the_output(planes: Scene) -> None:
    config = PipelineConfig(align=AlignConfig(min_depth=2.0, max_depth=12.0))
    result = Pipeline(FakeEngine(relative_of(planes)), config).process(frame_of(planes))
    finite = result.metric[np.isfinite(result.metric)]
    assert finite.size and finite.min() >= 2.0 and finite.max() <= 12.0
    assert np.isposinf(result.metric[planes.depth > 12.5]).all()  # beyond max_depth: REP 117


def test_without_lidar_only_relative_depth(street: Scene) -> None:
    engine = FakeEngine(relative_of(street))
    result = Pipeline(engine).process(frame_of(street, lidar=False), want_points=True)
    assert result.relative is not None and result.metric is None
    assert result.fit is None and result.raw_fit is None and result.scale is None
    assert result.fit_status == "empty" and "no LiDAR scan" in result.fit_reason
    assert result.points is None and any("no metric scale" in n for n in result.notes)


def test_without_camera_no_fit_and_no_cloud(street: Scene) -> None:
    pipeline = Pipeline(FakeEngine(relative_of(street)))
    result = pipeline.process(frame_of(street, camera=False), want_points=True)
    assert result.metric is None and result.raw_fit is None and result.camera is None
    assert result.fit_status == "empty"
    assert "no camera model" in result.fit_reason
    assert result.points is None and any("no camera model" in n for n in result.notes)

    # With a scale from an earlier frame the depth is still metric, but a cloud needs a camera.
    earlier = pipeline.process(frame_of(street, SECOND))
    held = pipeline.process(frame_of(street, SECOND + SECOND // 10, camera=False), want_points=True)
    assert held.fit_status == "holding" and held.scale == earlier.scale
    np.testing.assert_array_equal(held.metric, earlier.metric)  # the held value itself
    assert held.points is None and any("no usable camera" in n for n in held.notes)


def test_camera_of_another_size_is_not_used(street: Scene) -> None:
    frame = frame_of(street)
    wrong = Frame(
        street.rgb, SECOND, camera=street.camera.scaled(2 * WIDTH, 2 * HEIGHT),
        lidar_points=frame.lidar_points, T_cam_lidar=frame.T_cam_lidar,
    )  # fmt: skip
    result = Pipeline(FakeEngine(relative_of(street))).process(wrong)
    assert result.metric is None and result.camera is None
    assert "256x192 but the image is 128x96" in result.fit_reason


def test_temporal_filter_holds_then_expires(street: Scene) -> None:
    config = PipelineConfig(align=AlignConfig(hold_time=1.0))
    pipeline = Pipeline(FakeEngine(relative_of(street)), config)
    first = pipeline.process(frame_of(street, 10 * SECOND))
    assert first.fit_status == "tracking"
    held = pipeline.process(frame_of(street, 10 * SECOND + SECOND // 2, lidar=False))
    assert held.fit_status == "holding" and held.raw_fit is None
    assert (held.scale, held.shift) == (first.scale, first.shift)
    np.testing.assert_array_equal(held.metric, first.metric)
    expired = pipeline.process(frame_of(street, 12 * SECOND, lidar=False))
    assert expired.fit_status == "expired" and expired.metric is None and expired.scale is None
    back = pipeline.process(frame_of(street, 13 * SECOND))
    # A fresh fit on the same data (seeded RANSAC): the same scale, shift and depth as the first.
    assert back.fit_status == "tracking" and (back.scale, back.shift) == (first.scale, first.shift)
    np.testing.assert_array_equal(back.metric, first.metric)
    pipeline.reset()
    after_reset = pipeline.process(frame_of(street, 13 * SECOND + 1, lidar=False))
    assert after_reset.fit_status == "empty" and after_reset.metric is None


def test_failed_fit_is_reported_and_not_used(street: Scene) -> None:
    # Only the LiDAR returns from behind the camera: none land in the image, nothing to fit.
    T = street.T_cam_lidar
    behind = street.lidar_points[street.lidar_points @ T[2, :3] + T[2, 3] < 0]
    frame = Frame(street.rgb, SECOND, camera=street.camera, lidar_points=behind, T_cam_lidar=T)
    result = Pipeline(FakeEngine(relative_of(street))).process(frame)
    assert len(behind) > 1000 and result.lidar_points_used == 0
    assert result.raw_fit is not None and not result.raw_fit.ok
    assert result.fit is None and result.metric is None and result.fit_status == "empty"
    assert "fit failed" in result.fit_reason


def test_metric_model_output_is_used_as_is(planes: Scene) -> None:
    engine = FakeEngine(planes.depth, semantics="metric_depth")
    result = Pipeline(engine).process(frame_of(planes, lidar=False))
    assert result.fit_status == "metric_model" and result.fit is None
    assert (result.scale, result.shift) == (1.0, 0.0)
    np.testing.assert_allclose(result.metric, planes.depth, rtol=1e-6)


def test_metric_model_scale_refined_by_lidar(planes: Scene) -> None:
    engine = FakeEngine(1.3 * planes.depth, semantics="metric_depth")
    config = PipelineConfig(refine_metric_scale=True)
    pipeline = Pipeline(engine, config)
    result = pipeline.process(frame_of(planes))
    assert result.fit_status == "tracking" and result.fit.pred_semantics == "metric_depth"
    assert result.shift == pytest.approx(0.0, abs=1e-12)  # scale-only fit
    assert result.scale == pytest.approx(1.3, rel=1e-2)
    error, coverage = abs_rel(result.metric, planes.depth)
    assert error < 0.01 and coverage > 0.99
    assert relative_errors(result.metric, planes.depth).max() < 0.01  # every pixel
    # With no LiDAR and no held fit, the model's own metres are used.
    fresh = Pipeline(engine, config).process(frame_of(planes, lidar=False))
    assert fresh.fit is None and fresh.scale == 1.0
    np.testing.assert_allclose(fresh.metric, 1.3 * planes.depth, rtol=1e-6)


# ---------------------------------------------------------------------------- point clouds
def test_organised_cloud_matches_backprojected_truth(street: Scene) -> None:
    config = PipelineConfig(cloud_organized=True)
    result = Pipeline(FakeEngine(relative_of(street)), config).process(
        frame_of(street), want_points=True
    )
    assert result.points.shape == (HEIGHT, WIDTH, 3) and result.points.dtype == np.float32
    # (make_scene's camera: 70 degrees wide, fx = fy = 64 / tan(35 deg), centred)
    K = np.array([[WIDTH / 2 / np.tan(np.radians(35)), 0, 63.5], [0, 0, 47.5], [0, 0, 1.0]])
    K[1, 1] = K[0, 0]
    np.testing.assert_allclose(street.camera.K, K, rtol=1e-12)
    truth = pinhole_points(street.depth, K)
    known = np.isfinite(truth).all(axis=2) & np.isfinite(result.points).all(axis=2)
    assert known.sum() > 0.99 * np.isfinite(truth).all(axis=2).sum()
    distance = np.linalg.norm(result.points[known] - truth[known], axis=1)
    assert np.max(distance / street.depth[known]) < 0.01
    # rays: x/z and y/z of every point are the pinhole's, whatever the depth (a half-pixel
    # error in the principal point or the pixel centres would be off by 0.5 / 91 = 5e-3)
    np.testing.assert_allclose(
        result.points[known][:, :2] / result.points[known][:, 2:],
        truth[known][:, :2] / truth[known][:, 2:],
        atol=1e-5,
    )
    np.testing.assert_array_equal(result.colors, street.rgb)
    assert np.isnan(result.points[~np.isfinite(street.depth)]).all()


@pytest.mark.parametrize("stride", [2, 3, 5])
def test_cloud_stride_decimates_exactly(street: Scene, stride: int) -> None:
    engine = FakeEngine(relative_of(street))
    full = Pipeline(engine, PipelineConfig(cloud_organized=True)).process(
        frame_of(street), want_points=True
    )
    organised = Pipeline(engine, PipelineConfig(cloud_organized=True, cloud_stride=stride)).process(
        frame_of(street), want_points=True
    )
    expected = full.points[::stride, ::stride]
    assert organised.points.shape == expected.shape
    np.testing.assert_allclose(organised.points, expected, rtol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(organised.colors, street.rgb[::stride, ::stride])

    dense = Pipeline(engine, PipelineConfig(cloud_stride=stride)).process(
        frame_of(street), want_points=True
    )
    valid = np.isfinite(expected).all(axis=2)
    assert dense.points.shape == (valid.sum(), 3) and np.isfinite(dense.points).all()
    np.testing.assert_allclose(dense.points, expected[valid], rtol=1e-5)
    np.testing.assert_array_equal(dense.colors, street.rgb[::stride, ::stride][valid])


def test_cloud_with_a_distorted_camera_and_no_colours() -> None:
    camera = CameraModel(
        [[90.0, 0.0, 63.0], [0.0, 92.0, 49.0], [0.0, 0.0, 1.0]],
        [-0.2, 0.05, 0.001, -0.002, 0.0], "plumb_bob", WIDTH, HEIGHT,
    )  # fmt: skip
    scene = make_scene(WIDTH, HEIGHT, layout="boxes", seed=3, camera=camera)
    config = PipelineConfig(cloud_stride=2, cloud_organized=True, cloud_colors=False)
    result = Pipeline(FakeEngine(relative_of(scene)), config).process(
        frame_of(scene), want_points=True
    )
    assert result.colors is None
    # Truth by OpenCV's own undistortion (a second formulation of the camera model's inverse).
    v, u = np.mgrid[0:HEIGHT:2, 0:WIDTH:2].astype(np.float64)
    pixels = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    rays = cv2.undistortPoints(pixels, camera.K, camera.D, None, None, None, criteria)
    rays = rays.reshape(u.shape + (2,))
    z = scene.depth[::2, ::2].astype(np.float64)
    truth = np.concatenate([rays * z[..., None], z[..., None]], axis=2)
    both = np.isfinite(truth).all(axis=2) & np.isfinite(result.points).all(axis=2)
    assert both.mean() > 0.95
    distance = np.linalg.norm(result.points[both] - truth[both], axis=1)
    assert np.max(distance / np.linalg.norm(truth[both], axis=1)) < 0.01


def test_only_the_wanted_work_is_done(street: Scene) -> None:
    engine = FakeEngine(relative_of(street), labels=street.labels)
    pipeline = Pipeline(engine)
    labels_only = pipeline.process(frame_of(street), want_depth=False, want_labels=True)
    assert engine.calls[-1] == (False, True)
    assert labels_only.relative is None and labels_only.metric is None
    assert labels_only.fit_status == "not_computed" and "project" not in labels_only.timings
    np.testing.assert_array_equal(labels_only.labels, street.labels)

    depth_only = pipeline.process(frame_of(street))
    assert engine.calls[-1] == (True, False) and depth_only.labels is None
    assert depth_only.points is None and "cloud" not in depth_only.timings

    points_only = pipeline.process(frame_of(street), want_depth=False, want_points=True)
    assert engine.calls[-1] == (True, False) and points_only.points is not None

    calls = len(engine.calls)
    nothing = pipeline.process(frame_of(street), want_depth=False)
    assert len(engine.calls) == calls and nothing.relative is None and nothing.labels is None


# ---------------------------------------------------------------------------- configuration
def test_update_config_applies_valid_settings(street: Scene) -> None:
    pipeline = Pipeline(FakeEngine(relative_of(street)))
    new = pipeline.update_config(cloud_stride=4, cloud_organized=True)
    assert pipeline.config is new and new.cloud_stride == 4 and new.cloud_organized
    pipeline.update_config({"align.method": "lstsq", "align.hold_time": 2.5})
    assert pipeline.config.align.method == "lstsq" and pipeline.config.align.hold_time == 2.5
    assert pipeline._filter.hold_time == 2.5  # the running filter follows the setting
    pipeline.update_config(align={"smoothing": 0.2})
    assert pipeline.config.align.smoothing == 0.2 and pipeline.config.align.method == "lstsq"
    pipeline.update_config(align=AlignConfig(gate=0.0))
    assert pipeline._filter.gate == 0.0 and pipeline.config.align.method == "ransac"
    result = pipeline.process(frame_of(street), want_points=True)
    assert result.points.shape == (HEIGHT // 4, WIDTH // 4, 3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cloud_stride": 0}, "cloud_stride must be in"),
        ({"cloud_stride": 2.5}, "cloud_stride must be an int"),
        ({"cloud_organized": "yes"}, "cloud_organized must be true or false"),
        ({"refine_metric_scale": 1}, "refine_metric_scale"),
        ({"align.method": "median"}, "align.method"),
        ({"align.min_depth": 300.0}, "align.min_depth"),
        ({"align.hold_time": -1.0}, "align.hold_time"),
        ({"align.bogus": 1}, "unknown align setting"),
        ({"cloud_size": 3}, "unknown pipeline setting 'cloud_size'"),
        ({"align": 3}, "align must be an AlignConfig"),
    ],
)
def test_update_config_rejects_bad_values_and_keeps_the_old(
    street: Scene, changes: dict, message: str
) -> None:
    pipeline = Pipeline(FakeEngine(relative_of(street)))
    before = pipeline.config
    with pytest.raises(ValueError, match=message):
        pipeline.update_config(changes)
    assert pipeline.config is before


def test_config_from_dict() -> None:
    config = PipelineConfig.from_dict(
        {"cloud_stride": 2, "align": {"method": "lstsq"}, "align.max_depth": 50.0}
    )
    assert config.cloud_stride == 2
    assert config.align == AlignConfig(method="lstsq", max_depth=50.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rgb": np.zeros((4, 4, 3), np.float32)}, "uint8"),
        ({"rgb": np.zeros((4, 4), np.uint8)}, "HxWx3"),
        ({"rgb": np.zeros((0, 4, 3), np.uint8)}, "HxWx3"),
        ({"stamp_ns": 1.5}, "stamp_ns"),
        ({"camera": "K"}, "CameraModel"),
        ({"lidar_points": np.zeros((5, 2)), "T_cam_lidar": np.eye(4)}, "Nx3"),
        ({"lidar_points": np.zeros((5, 3))}, "T_cam_lidar"),
        ({"T_cam_lidar": np.eye(3)}, "4x4"),
    ],
)
def test_bad_frames_are_rejected(kwargs: dict, message: str) -> None:
    values = {"rgb": np.zeros((4, 4, 3), np.uint8), "stamp_ns": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        Frame(**values)


def test_pipeline_rejects_bad_arguments(street: Scene) -> None:
    with pytest.raises(ValueError, match="infer"):
        Pipeline(object())
    with pytest.raises(ValueError, match="PipelineConfig"):
        Pipeline(FakeEngine(relative_of(street)), AlignConfig())
    with pytest.raises(ValueError, match="Frame"):
        Pipeline(FakeEngine(relative_of(street))).process(street.rgb)


# ---------------------------------------------------------------------------- real Engine
class FixedDepth(nn.Module):
    """Ignores the image; returns a fixed (H, W) map for every frame of the batch."""

    def __init__(self, depth: np.ndarray, semantics: str = "relative_inverse_depth") -> None:
        super().__init__()
        self.register_buffer("depth", torch.from_numpy(np.ascontiguousarray(depth)))
        self.output_semantics = semantics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depth.expand(x.shape[0], *self.depth.shape).clone()


class FixedLabels(nn.Module):
    """Ignores the image; logits that make ``classes`` (0-based) the argmax everywhere."""

    output_semantics = "labels"

    def __init__(self, classes: np.ndarray, num_classes: int = 150) -> None:
        super().__init__()
        one_hot = np.eye(num_classes, dtype=np.float32)[classes].transpose(2, 0, 1)
        self.register_buffer("logits", torch.from_numpy(np.ascontiguousarray(one_hot)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], *self.logits.shape).clone()


def test_real_engine_with_stand_in_models(planes: Scene) -> None:
    torch.manual_seed(0)
    ade_class = np.array([2, 3, 0, 20], dtype=np.int64)  # scene label -> 0-based ADE20K class
    engine = Engine(
        EngineConfig(model=None, net_size=64, threads=1),
        depth_model=FixedDepth(relative_of(planes)),
        segmentation_model=FixedLabels(ade_class[planes.labels]),
    )
    pipeline = Pipeline(engine, PipelineConfig(cloud_stride=2))
    result = pipeline.process(frame_of(planes), want_labels=True, want_points=True)
    error, coverage = abs_rel(result.metric, planes.depth)
    assert error < 0.01 and coverage > 0.99
    # Every pixel: the stand-in is exact and the engine's resize is the identity here.
    assert relative_errors(result.metric, planes.depth).max() < 0.005
    np.testing.assert_array_equal(result.labels, ade_class[planes.labels] + 1)  # argmax + 1
    assert result.labels.dtype == np.uint8
    assert result.points.ndim == 2 and result.points.shape[1] == 3
    assert "engine.forward" in result.timings and "cloud" in result.timings


def test_real_engine_output_size_scales_the_camera(planes: Scene) -> None:
    out_w, out_h = 64, 48
    engine = Engine(
        EngineConfig(model=None, net_size=64, output_size=(out_w, out_h), threads=1),
        depth_model=FixedDepth(relative_of(planes)),
    )
    config = PipelineConfig(cloud_organized=True)
    result = Pipeline(engine, config).process(frame_of(planes), want_points=True)
    assert result.relative.shape == (out_h, out_w) and result.metric.shape == (out_h, out_w)
    assert result.camera.size == (out_w, out_h)
    # Halving the image: f / 2, and pixel centres map as u' = (u + 0.5) / 2 - 0.5, so the
    # principal point (63.5, 47.5) becomes (31.5, 23.5), not 31.75 / 23.75 (a half-pixel slip).
    f = planes.camera.fx
    K = np.array([[f / 2, 0.0, 31.5], [0.0, f / 2, 23.5], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(result.camera.K, K, rtol=0, atol=1e-12)
    # truth at the output size: ray-cast depth of the hand-made camera's pixel centres
    truth_scene = make_scene(
        out_w, out_h, layout="planes", seed=2, camera=CameraModel(K, None, "none", out_w, out_h)
    )
    error, coverage = abs_rel(result.metric, truth_scene.depth)
    assert error < 0.02 and coverage > 0.99
    # Per pixel: the bicubic halving of the relative map blurs the creases between the planes
    # (up to ~2 %); everywhere else the depth is within 1 %.
    errors = relative_errors(result.metric, truth_scene.depth)
    assert errors.max() < 0.03 and np.mean(errors < 0.01) > 0.98
    assert result.points.shape == (out_h, out_w, 3) and result.colors.shape == (out_h, out_w, 3)
    truth = pinhole_points(truth_scene.depth, K)
    distance = np.linalg.norm(result.points - truth, axis=2)
    assert np.nanmax(distance / truth_scene.depth) < 0.03


def test_metric_stand_in_through_the_real_engine(planes: Scene) -> None:
    engine = Engine(
        EngineConfig(model=None, net_size=64, threads=1),
        depth_model=FixedDepth(planes.depth, semantics="metric_depth"),
    )
    result = Pipeline(engine).process(frame_of(planes, lidar=False))
    assert result.depth_semantics == "metric_depth" and result.fit_status == "metric_model"
    np.testing.assert_allclose(result.metric, planes.depth, rtol=1e-5)


def test_segmentation_only_engine_skips_depth(planes: Scene) -> None:
    engine = Engine(
        EngineConfig(model=None, net_size=64, threads=1),
        segmentation_model=FixedLabels(np.zeros(planes.labels.shape, np.int64)),
    )
    result: Result = Pipeline(engine).process(frame_of(planes), want_labels=True)
    assert result.relative is None and result.metric is None
    assert (result.labels == 1).all()
    assert any("no depth model" in note for note in result.notes)
