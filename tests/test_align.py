"""LiDAR projection, robust scale-and-shift fit, temporal filter and metric conversion."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
import pytest

from dpt_ros.align import (
    FIELD_DESCRIPTIONS,
    AlignConfig,
    MetricAligner,
    ScaleShiftFilter,
    ScaleShiftFit,
    affine_to_depth,
    fit_scale_shift,
    project_lidar,
    sample_prediction,
    to_metric,
)
from dpt_ros.geometry import CameraModel
from dpt_ros.synthetic import Box, Plane, make_relative_prediction, make_scene, raycast

TRUE_SCALE, TRUE_SHIFT = 3.7, 0.25  # pred = 3.7 / depth + 0.25 -> s = 1 / 3.7, t = -0.25 / 3.7


def affine_data(n: int = 500, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1.0, 80.0, n)
    pred = TRUE_SCALE / depth * (1.0 + noise * rng.standard_normal(n)) + TRUE_SHIFT
    return pred, depth


def absrel(metric: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(truth) & np.isfinite(metric)
    return float(np.mean(np.abs(metric[ok] - truth[ok]) / truth[ok]))


# ============================================================================ the fit
@pytest.mark.parametrize(
    ("method", "refine"),
    [("lstsq", "none"), ("ransac", "none"), ("ransac", "huber"), ("ransac", "tukey")],
)
def test_exact_recovery_on_noise_free_data(method: str, refine: str) -> None:
    pred, depth = affine_data()
    fit = fit_scale_shift(pred, depth, method, refine=refine)
    assert fit.ok, fit.reason
    assert fit.scale == pytest.approx(1 / TRUE_SCALE, rel=1e-9)
    assert fit.shift == pytest.approx(-TRUE_SHIFT / TRUE_SCALE, rel=1e-9)
    assert fit.inliers.all() and fit.n_inliers == fit.n_points == 500
    assert fit.residual_rms < 1e-9
    np.testing.assert_allclose(to_metric(pred, fit), depth, rtol=1e-5)


def test_scale_only_for_metric_models() -> None:
    _, depth = affine_data()
    pred_metres = depth * 1.3  # a metric model that is 30 % off
    fit = fit_scale_shift(pred_metres, depth, scale_only=True, pred_semantics="metric_depth")
    assert fit.ok and fit.shift == 0.0
    np.testing.assert_allclose(to_metric(pred_metres, fit), depth, rtol=1e-5)
    # A shifted relative prediction cannot be explained by a scale alone.
    pred, _ = affine_data()
    assert not fit_scale_shift(pred, depth, scale_only=True).ok


def test_robust_fit_holds_under_outliers_where_lstsq_does_not() -> None:
    """Same scene, prediction and LiDAR pattern; only the share of gross outliers changes."""
    errors: dict[str, dict[float, float]] = {"lstsq": {}, "ransac": {}}
    for share in (0.0, 0.1, 0.3):
        scene = make_scene(320, 240, layout="street", seed=4, lidar_outlier_share=share)
        pred = make_relative_prediction(scene.depth, noise=0.03, seed=4)
        proj = project_lidar(scene.lidar_points, scene.T_cam_lidar, scene.camera)
        values = sample_prediction(pred, proj)
        for method, refine in (("lstsq", "none"), ("ransac", "huber")):
            fit = fit_scale_shift(values, proj.depth, method, refine=refine)
            metric = affine_to_depth(pred, fit.scale, fit.shift, 0.1, 1000.0)
            errors[method][share] = absrel(metric, scene.depth)
    robust, plain = errors["ransac"], errors["lstsq"]
    assert robust[0.0] < 0.05  # the 3 % prediction noise, not the fit, sets the floor
    assert robust[0.1] <= 1.5 * robust[0.0]
    assert robust[0.3] <= 1.5 * robust[0.0]
    assert plain[0.3] > 1.5 * plain[0.0]


def test_ransac_is_deterministic_with_a_seed() -> None:
    pred, depth = affine_data(5000, noise=0.02)
    depth[::3] = np.random.default_rng(9).uniform(1, 80, depth[::3].size)
    a = fit_scale_shift(pred, depth, seed=7, sample_size=500)
    b = fit_scale_shift(pred, depth, seed=7, sample_size=500)
    c = fit_scale_shift(pred, depth, seed=np.random.default_rng(7), sample_size=500)
    assert a.ok and (a.scale, a.shift) == (b.scale, b.shift)
    np.testing.assert_array_equal(a.inliers, b.inliers)
    assert c.ok and c.scale == pytest.approx(a.scale, rel=1e-2)
    assert 0 < a.iterations <= 200


def test_weights_select_points() -> None:
    pred, depth = affine_data(400)
    depth[:100] *= 3.0  # wrong, and weighted out
    weights = np.r_[np.zeros(100), np.ones(300)]
    fit = fit_scale_shift(pred, depth, "lstsq", weights=weights)
    assert fit.ok and fit.scale == pytest.approx(1 / TRUE_SCALE, rel=1e-9)
    assert fit.n_points == 300 and not fit.inliers[:100].any()


@pytest.mark.parametrize(
    ("method", "refine"),
    [("lstsq", "huber"), ("lstsq", "tukey"), ("ransac", "huber"), ("ransac", "none")],
)
def test_caller_weights_carry_through_every_refinement(method: str, refine: str) -> None:
    # Two groups the threshold (0.1) cannot tell apart: 150 exact points and a majority of 250
    # whose depth is 5 % off. Weighted down to 1e-6, the majority must not move the fit: the
    # answer is the exact group's, to 1e-6. A refinement that drops the caller's weights
    # (IRLS or RANSAC's least-squares passes) lands between the groups, ~3 % off. (Not
    # ransac + tukey: RANSAC starts on the majority, whose residuals are 0, so Tukey's
    # redescending weights reject the exact group whatever the caller says: correct.)
    pred, depth = affine_data(400, seed=4)
    depth[150:] *= 1.05
    weights = np.r_[np.ones(150), np.full(250, 1e-6)]
    fit = fit_scale_shift(pred, depth, method, refine=refine, weights=weights)
    assert fit.ok, fit.reason
    assert fit.scale == pytest.approx(1 / TRUE_SCALE, rel=1e-6)
    assert fit.shift == pytest.approx(-TRUE_SHIFT / TRUE_SCALE, rel=1e-5)
    unweighted = fit_scale_shift(pred, depth, method, refine=refine)
    assert abs(unweighted.scale * TRUE_SCALE - 1) > 0.01  # the case really needs the weights


def test_residual_statistics_reflect_noise() -> None:
    pred, depth = affine_data(20000, noise=0.01, seed=2)
    fit = fit_scale_shift(pred, depth)
    assert fit.ok
    # 1 % noise on inverse depth plus the shift -> relative residuals of roughly that size.
    assert 0.003 < fit.residual_rms < 0.03
    assert fit.residual_mean_abs < fit.residual_rms
    assert fit.pred_range[0] < fit.pred_range[1]


def test_too_many_outliers_fail_the_inlier_ratio() -> None:
    pred, depth = affine_data(1000)
    depth[:800] = np.random.default_rng(1).uniform(1, 80, 800)
    fit = fit_scale_shift(pred, depth, min_inlier_ratio=0.5)
    assert not fit.ok and "inlier ratio" in fit.reason
    assert math.isfinite(fit.scale)  # the estimate is still reported for diagnostics


def test_prediction_that_disagrees_with_lidar_gives_no_fit() -> None:
    _, depth = affine_data()
    pred = depth / 10.0  # grows with depth: not an inverse depth
    for method in ("lstsq", "ransac"):
        fit = fit_scale_shift(pred, depth, method, refine="none")
        assert not fit.ok, method
        assert "scale" in fit.reason


# ------------------------------------------------- predictions that carry no depth information
@functools.cache
def _scene_samples(layout: str, seed: int, outliers: float = 0.0):
    """A synthetic scene and its LiDAR projected into the camera (cached: ray casting is slow)."""
    scene = make_scene(320, 240, layout=layout, seed=seed, lidar_outlier_share=outliers)
    return scene, project_lidar(scene.lidar_points, scene.T_cam_lidar, scene.camera)


def test_flat_fit_of_a_noise_prediction_is_rejected() -> None:
    """The reported bug: on the street scene a uniform-noise prediction passes every other check
    with a near-zero scale (every pixel at the most common LiDAR depth)."""
    _, proj = _scene_samples("street", 1)
    noise = np.random.default_rng(1).uniform(0.0, 1.0, (240, 320))
    values = sample_prediction(noise, proj)
    unchecked = fit_scale_shift(values, proj.depth, min_gain_over_flat=0.0)
    assert unchecked.ok and unchecked.scale < 1e-3  # the flat fit the check exists for
    assert math.isnan(unchecked.flat_inlier_ratio)
    fit = fit_scale_shift(values, proj.depth)
    assert not fit.ok
    assert fit.reason.startswith("gain over flat") and "below 0.10" in fit.reason
    assert f"{fit.inlier_ratio:.2f} vs {fit.flat_inlier_ratio:.2f}" in fit.reason
    assert fit.inlier_ratio >= 0.3  # the inlier ratio alone would have accepted it
    assert fit.gain_over_flat < 0.02
    assert (fit.scale, fit.shift) == (unchecked.scale, unchecked.shift)  # kept for diagnostics


@pytest.mark.parametrize("layout", ["street", "boxes", "planes"])
@pytest.mark.parametrize(
    ("method", "refine"), [("ransac", "huber"), ("ransac", "none"), ("lstsq", "none")]
)
def test_noise_predictions_never_fit(layout: str, method: str, refine: str) -> None:
    # min_inlier_ratio=0 so that the inlier ratio cannot reject them first.
    gain_rejections = 0
    for seed in range(4):
        _, proj = _scene_samples(layout, seed)
        noise = np.random.default_rng(seed).uniform(0.0, 1.0, (240, 320))
        values = sample_prediction(noise, proj)
        fit = fit_scale_shift(values, proj.depth, method, refine=refine, min_inlier_ratio=0.0)
        assert not fit.ok, (seed, fit.reason)
        if fit.scale > 0:  # the others fail as "non-positive scale"
            assert "gain over flat" in fit.reason, (seed, fit.reason)
            assert fit.gain_over_flat < 0.05
            gain_rejections += 1
    assert gain_rejections >= 2


@pytest.mark.parametrize("scale_only", [False, True])
def test_constant_prediction_is_rejected(scale_only: bool) -> None:
    _, proj = _scene_samples("street", 2)
    rng = np.random.default_rng(2)
    if scale_only:  # a metric model that says 7 m everywhere, give or take a millimetre
        pred = 7.0 + 1e-3 * rng.standard_normal(len(proj))
        semantics = "metric_depth"
    else:
        pred = 0.5 + 1e-4 * rng.standard_normal(len(proj))
        semantics = "relative_inverse_depth"
    kwargs = {"scale_only": scale_only, "pred_semantics": semantics, "min_inlier_ratio": 0.0}
    fit = fit_scale_shift(pred, proj.depth, **kwargs)
    assert not fit.ok and "gain over flat" in fit.reason, fit.reason
    assert fit.gain_over_flat < 0.05
    # The check is what rejects it: without it the flat fit goes through.
    assert fit_scale_shift(pred, proj.depth, min_gain_over_flat=0.0, **kwargs).ok


@pytest.mark.parametrize("layout", ["street", "boxes", "planes"])
@pytest.mark.parametrize("outliers", [0.3, 0.5])
def test_noisy_true_prediction_with_many_outliers_still_fits(layout: str, outliers: float) -> None:
    for seed in range(2):
        scene, proj = _scene_samples(layout, seed, outliers)
        truth = np.where(np.isfinite(scene.depth), scene.depth, np.inf)
        pred = make_relative_prediction(truth, noise=0.05, seed=seed)
        fit = fit_scale_shift(sample_prediction(pred, proj), proj.depth)
        assert fit.ok, (seed, fit.reason)
        assert fit.gain_over_flat > 0.3 and 0.0 < fit.flat_inlier_ratio < 0.5
        metric = affine_to_depth(pred, fit.scale, fit.shift, 0.1, 1000.0)
        assert absrel(metric, scene.depth) < 0.08
        # A metric model with the same errors, 20 % off in scale, fitted by scale alone.
        inverse = make_relative_prediction(truth, scale=1.0, shift=0.0, noise=0.05, seed=seed)
        with np.errstate(divide="ignore"):
            metres = 1.2 / inverse  # sky: inverse depth 0, infinitely far
        values = sample_prediction(metres, proj)
        scaled = fit_scale_shift(values, proj.depth, scale_only=True, pred_semantics="metric_depth")
        assert scaled.ok and scaled.scale == pytest.approx(1.2, rel=0.03), scaled.reason


@pytest.mark.parametrize("scale_only", [False, True])
def test_lidar_that_sees_a_single_depth_cannot_confirm_a_prediction(scale_only: bool) -> None:
    rng = np.random.default_rng(3)
    depth = rng.uniform(4.8, 5.2, 1000)  # a wall: every point within 4 % of 5 m
    pred = 1.0 / depth if scale_only else 2.0 / depth + 0.1
    fit = fit_scale_shift(pred, depth, scale_only=scale_only)
    assert not fit.ok and fit.flat_inlier_ratio == 1.0
    assert "within the residual threshold (0.1) of one depth" in fit.reason
    assert fit_scale_shift(pred, depth, scale_only=scale_only, min_gain_over_flat=0.0).ok


def _degenerate_cases():
    pred, depth = affine_data(50)
    nan_pred = pred.copy()
    nan_pred[:] = np.nan
    return {
        "no points": (np.array([]), np.array([])),
        "one point": (pred[:1], depth[:1]),
        "all one depth": (pred, np.full(50, 7.0)),
        "constant prediction": (np.full(50, 0.4), depth),
        "all nan prediction": (nan_pred, depth),
        "nan and inf depth": (pred, np.where(np.arange(50) % 2, np.nan, np.inf)),
        "negative depths": (pred, -depth),
        "zero depths": (pred, np.zeros(50)),
        "inf prediction": (np.full(50, np.inf), depth),
    }


@pytest.mark.parametrize("case", sorted(_degenerate_cases()))
@pytest.mark.parametrize(
    ("method", "refine"), [("lstsq", "none"), ("ransac", "huber"), ("lstsq", "tukey")]
)
def test_degenerate_inputs_fail_cleanly(case: str, method: str, refine: str) -> None:
    pred, depth = _degenerate_cases()[case]
    fit = fit_scale_shift(pred, depth, method, refine=refine, min_inliers=2)
    assert not fit.ok
    assert fit.reason and fit.reason != "ok"
    assert fit.inliers.shape == pred.shape and not fit.inliers.any()


def test_nan_points_are_ignored_not_fatal() -> None:
    pred, depth = affine_data(200)
    pred[:20] = np.nan
    depth[20:40] = np.inf
    depth[40:60] = -1.0
    fit = fit_scale_shift(pred, depth)
    assert fit.ok and fit.n_points == 140
    assert fit.scale == pytest.approx(1 / TRUE_SCALE, rel=1e-9)
    assert not fit.inliers[:60].any() and fit.inliers[60:].all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pred": np.ones(3), "target_depth": np.ones(4)}, "differ in length"),
        ({"pred": np.ones((3, 2)), "target_depth": np.ones((3, 2))}, "1-D"),
        ({"pred": np.array(["a", "b"]), "target_depth": np.ones(2)}, "numeric"),
        ({"method": "magic"}, "unknown fit method"),
        ({"refine": "cauchy"}, "unknown refinement"),
        ({"residual_threshold": 0.0}, "residual_threshold"),
        ({"weights": np.ones(3)}, "weights"),
        ({"pred_semantics": "disparity"}, "pred_semantics"),
        ({"min_gain_over_flat": 1.5}, "min_gain_over_flat"),
        ({"min_gain_over_flat": -0.1}, "min_gain_over_flat"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    args = {"pred": np.ones(10), "target_depth": np.arange(1.0, 11.0)} | kwargs
    with pytest.raises(ValueError, match=message):
        fit_scale_shift(**args)


# ============================================================================ to_metric
def test_to_metric_masks_invalid_and_out_of_range() -> None:
    fit = fit_scale_shift(*affine_data())
    pred = np.array([[TRUE_SCALE / 2.0 + TRUE_SHIFT, TRUE_SHIFT, 0.0], [np.nan, 3.7, 1.0]])
    metric = to_metric(pred, fit, min_depth=1.5, max_depth=10.0)
    assert metric.dtype == np.float32 and metric.shape == pred.shape
    assert metric[0, 0] == pytest.approx(2.0, rel=1e-5)
    # inverse depth 0 (sky), negative, NaN, depth 1.06 m (< min) and 5.05 m (kept).
    assert np.isnan(metric[0, 1]) and np.isnan(metric[0, 2]) and np.isnan(metric[1, 0])
    assert np.isnan(metric[1, 1]) and metric[1, 2] == pytest.approx(3.7 / 0.75, rel=1e-5)
    failed = fit_scale_shift(np.ones(5), np.arange(1.0, 6.0))
    with pytest.raises(ValueError, match="failed fit"):
        to_metric(pred, failed)


# ============================================================================ projection
def test_project_lidar_keeps_points_in_view_and_maps_indices() -> None:
    cam = CameraModel.pinhole(100.0, 100.0, 31.5, 23.5, 64, 48)
    T = np.eye(4)
    T[:3, 3] = [0.0, 0.0, 1.0]  # the LiDAR sits 1 m behind the camera
    points = np.array(
        [
            [0.0, 0.0, 4.0, 7.0],  # in view, extra intensity column
            [0.0, 0.0, -4.0, 7.0],  # behind
            [100.0, 0.0, 4.0, 7.0],  # outside
            [np.nan, 0.0, 4.0, 7.0],
            [0.1, 0.05, 9.0, 7.0],  # in view
        ],
        dtype=np.float32,
    )
    proj = project_lidar(points, T, cam, zbuffer_window=0)
    np.testing.assert_array_equal(proj.index, [0, 4])
    np.testing.assert_allclose(proj.depth, [5.0, 10.0])
    np.testing.assert_array_equal(proj.cols, [32, 33])  # 31.5 rounds half up; 31.5+1 = 32.5
    np.testing.assert_array_equal(proj.rows, [24, 24])
    assert proj.n_input == 5 and proj.n_in_view == 2 and len(proj) == 2
    pred = np.arange(64 * 48, dtype=np.float32).reshape(48, 64)
    np.testing.assert_array_equal(sample_prediction(pred, proj), pred[[24, 24], [32, 33]])
    with pytest.raises(ValueError, match="scaled"):
        sample_prediction(pred[::2, ::2], proj)
    with pytest.raises(ValueError, match="4x4"):
        project_lidar(points, np.eye(3), cam)
    with pytest.raises(ValueError, match="odd"):
        project_lidar(points, T, cam, zbuffer_window=4)


def test_zbuffer_drops_points_hidden_by_parallax() -> None:
    """A box 6 m in front of a wall; the LiDAR sits 0.6 m to the right of the camera and sees a
    strip of wall behind the box's edge that the camera cannot see."""
    cam = CameraModel.pinhole(500.0, 500.0, 319.5, 239.5, 640, 480)
    prims = [(2, Plane((0.0, 0.0, 20.0), (0.0, 0.0, -1.0))), (3, Box((0.0, 0.0, 6.0), (2, 2, 1)))]
    origin = np.array([0.6, -0.2, 0.0])
    az, el = np.meshgrid(np.radians(np.arange(-30, 30, 0.15)), np.radians(np.arange(-20, 20, 0.4)))
    dirs = np.stack([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)], -1)
    dirs = dirs.reshape(-1, 3)
    ranges, _ = raycast(origin, dirs, prims)
    points_cam = origin + dirs * ranges[:, None]
    # Ground truth: a point is visible if the camera's ray towards it hits nothing nearer.
    t_cam, _ = raycast(np.zeros(3), points_cam, prims)
    visible = t_cam > 1.0 - 1e-6
    T = np.eye(4)
    T[:3, 3] = origin
    points_lidar = points_cam - origin

    plain = project_lidar(points_lidar, T, cam, zbuffer_window=0)
    hidden_in_view = np.count_nonzero(~visible[plain.index])
    assert hidden_in_view > 100  # the scene really has parallax
    proj = project_lidar(points_lidar, T, cam, zbuffer_window=5, zbuffer_margin=0.1)
    kept = np.zeros(len(points_lidar), dtype=bool)
    kept[proj.index] = True
    in_view = np.zeros_like(kept)
    in_view[plain.index] = True
    hidden_kept = np.count_nonzero(kept & in_view & ~visible)
    visible_kept = np.count_nonzero(kept & visible) / np.count_nonzero(in_view & visible)
    assert hidden_kept <= 0.05 * hidden_in_view
    assert visible_kept >= 0.97  # only wall points right at the box silhouette go
    assert proj.n_occluded == len(plain) - len(proj)


def _kitti_frame(root: Path, frame: str):
    import cv2

    calib = {}
    for line in (root / "calib" / f"{frame}.txt").read_text().splitlines():
        if ":" in line:
            key, values = line.split(":", 1)
            calib[key] = np.array([float(v) for v in values.split()])
    P2 = calib["P2"].reshape(3, 4)
    R0 = np.eye(4)
    R0[:3, :3] = calib["R0_rect"].reshape(3, 3)
    velo_to_cam = np.eye(4)
    velo_to_cam[:3] = calib["Tr_velo_to_cam"].reshape(3, 4)
    K = P2[:, :3]
    # P2 = K [I | t]: fold cam2's offset into the transform so the camera model is K alone.
    offset = np.eye(4)
    offset[:3, 3] = np.linalg.solve(K, P2[:, 3])
    image = cv2.imread(str(root / "image_2" / f"{frame}.png"))
    camera = CameraModel(K, [], "none", image.shape[1], image.shape[0])
    points = np.fromfile(root / "velodyne" / f"{frame}.bin", dtype=np.float32).reshape(-1, 4)
    # R0_rect is orthonormal only to ~1e-5, which as_transform accepts.
    return points, offset @ R0 @ velo_to_cam, camera


@pytest.mark.parametrize(
    ("frame", "in_view", "depth_range"),
    [
        ("000000", 20285, (4.22, 72.73)),
        ("000001", 18630, (4.77, 76.73)),
        ("000002", 20210, (4.50, 79.21)),
    ],
)
def test_kitti_projection_matches_the_sample_readme(
    sampledata_dir: Path, frame: str, in_view: int, depth_range: tuple[float, float]
) -> None:
    root = sampledata_dir / "kitti_object" / "training"
    if not (root / "velodyne" / f"{frame}.bin").is_file():
        pytest.skip("KITTI sample frames are not present")
    points, T, camera = _kitti_frame(root, frame)
    proj = project_lidar(points, T, camera, min_depth=0.1, zbuffer_window=0)
    # The README counts u in [0, W); we count pixel centres, u in [-0.5, W - 0.5).
    assert abs(len(proj) - in_view) <= 0.005 * in_view
    assert proj.depth.min() == pytest.approx(depth_range[0], abs=0.01)
    assert proj.depth.max() == pytest.approx(depth_range[1], abs=0.01)
    filtered = project_lidar(points, T, camera, min_depth=0.1)
    assert 0.85 * len(proj) < len(filtered) < len(proj)  # some parallax, not a wipe-out
    assert (filtered.rows >= 0).all() and (filtered.rows < camera.height).all()


# ============================================================================ temporal filter
def _fit(scale: float, shift: float = 0.0, ok: bool = True) -> ScaleShiftFit:
    return ScaleShiftFit(
        scale, shift, np.ones(3, bool), ok, "ok" if ok else "bad", 3, 3, pred_range=(0.1, 1.0)
    )


def test_filter_smooths_consecutive_fits() -> None:
    filt = ScaleShiftFilter(smoothing=0.5, gate=0.5, hold_time=1.0)
    assert filt.update(_fit(1.0), 0.0).scale == 1.0
    out = filt.update(_fit(1.2), 0.1)
    assert out.scale == pytest.approx(1.1) and filt.state == "tracking"


def test_filter_holds_then_times_out() -> None:
    filt = ScaleShiftFilter(smoothing=0.0, hold_time=0.5)
    assert filt.update(None, 0.0) is None and filt.state == "empty"
    filt.update(_fit(2.0), 1.0)
    held = filt.update(None, 1.3)
    assert held is not None and held.scale == 2.0 and filt.state == "holding"
    assert filt.update(_fit(9.0, ok=False), 1.5).scale == 2.0  # a failed fit counts as missing
    assert "fit failed" in filt.reason
    assert filt.update(None, 1.6) is None and filt.state == "expired"
    assert "old" in filt.reason
    # After expiry the next fit starts afresh: no smoothing against, or gating by, the old one.
    assert filt.update(_fit(5.0), 1.7).scale == 5.0


def test_filter_gates_jumps_and_reacquires() -> None:
    filt = ScaleShiftFilter(smoothing=0.0, gate=0.2, gate_max_rejections=2, hold_time=10.0)
    filt.update(_fit(1.0), 0.0)
    assert filt.update(_fit(1.1), 0.1).scale == pytest.approx(1.1)  # 10 % < gate
    assert filt.update(_fit(3.0), 0.2).scale == pytest.approx(1.1)  # rejected, held
    assert "rejected" in filt.reason and filt.state == "holding"
    assert filt.update(_fit(3.0), 0.3).scale == pytest.approx(1.1)
    out = filt.update(_fit(3.0), 0.4)  # the third in a row: the scene really changed
    assert out.scale == pytest.approx(3.0) and "re-initialised" in filt.reason


def test_filter_resets_when_time_goes_backwards() -> None:
    filt = ScaleShiftFilter(smoothing=0.9, hold_time=1.0)
    filt.update(_fit(1.0), 100.0)
    assert filt.update(_fit(1.1), 5.0).scale == pytest.approx(1.1)  # not blended with 1.0
    assert "backwards" in filt.reason
    with pytest.raises(ValueError, match="stamp"):
        filt.update(None, float("nan"))


# ============================================================================ config + aligner
def test_align_config_fields_are_described_and_validated() -> None:
    config = AlignConfig()
    for field in dataclasses.fields(AlignConfig):
        assert FIELD_DESCRIPTIONS[field.name], field.name
        assert "range" in field.metadata or "choices" in field.metadata or field.type == "bool"
    fit = fit_scale_shift(*affine_data(), **config.fit_kwargs())
    assert fit.ok
    assert config.fit_kwargs()["min_gain_over_flat"] == config.min_gain_over_flat == 0.1
    strict = AlignConfig(min_gain_over_flat=0.99).fit_kwargs()
    assert not fit_scale_shift(*affine_data(noise=0.05), **strict).ok
    for bad, message in [
        ({"method": "magic"}, "method"),
        ({"residual_threshold": 0.0}, "residual_threshold"),
        ({"min_inliers": 2.5}, "int"),
        ({"scale_only": 1}, "true or false"),
        ({"min_depth": 10.0, "max_depth": 5.0}, "below"),
        ({"zbuffer_window": 4}, "odd"),
        ({"min_gain_over_flat": 1.5}, "min_gain_over_flat"),
    ]:
        with pytest.raises(ValueError, match=message):
            AlignConfig(**bad)
    with pytest.raises(ValueError, match="unknown align setting"):
        AlignConfig.from_dict({"treshold": 0.1})
    assert AlignConfig.from_dict({"hold_time": 2}).hold_time == 2.0


def test_metric_aligner_end_to_end_with_a_smaller_prediction() -> None:
    scene = make_scene(320, 240, layout="boxes", seed=1, lidar_outlier_share=0.2)
    truth = scene.depth[::2, ::2]  # the network ran at half resolution
    pred = make_relative_prediction(truth, noise=0.02, seed=1)
    aligner = MetricAligner(AlignConfig(hold_time=0.5))
    out = aligner.align(pred, 0.0, scene.camera, scene.lidar_points, scene.T_cam_lidar)
    assert out.raw_fit.ok and out.filter_state == "tracking"
    assert out.metric_depth.shape == pred.shape
    assert absrel(out.metric_depth, truth) < 0.05
    assert out.projection.image_size == (160, 120)
    assert {"project_ms", "fit_ms", "to_metric_ms"} <= set(out.timings)
    held = aligner.align(pred, 0.3)  # no LiDAR this frame
    assert held.fit is out.fit and held.filter_state == "holding"
    expired = aligner.align(pred, 1.0)
    assert expired.metric_depth is None and expired.filter_state == "expired"
    with pytest.raises(ValueError, match="camera model"):
        aligner.align(pred, 1.1, None, scene.lidar_points, scene.T_cam_lidar)


# ============================================================================ synthetic scenes
def test_make_scene_is_consistent_and_seeded() -> None:
    scene = make_scene(160, 120, layout="street", seed=3, lidar_outlier_share=0.2)
    again = make_scene(160, 120, layout="street", seed=3, lidar_outlier_share=0.2)
    np.testing.assert_array_equal(scene.lidar_points, again.lidar_points)
    assert scene.rgb.shape == (120, 160, 3) and scene.rgb.dtype == np.uint8
    assert scene.depth.dtype == np.float32 and np.isinf(scene.depth[0]).any()  # sky
    assert (scene.labels[np.isinf(scene.depth)] == 0).all()
    assert scene.lidar_points.shape[1] == 3 and scene.lidar_points.dtype == np.float32
    assert abs(scene.lidar_is_outlier.mean() - 0.2) < 0.02
    # Inlier LiDAR points agree with the ray-cast depth where the camera sees them too.
    proj = project_lidar(scene.lidar_points, scene.T_cam_lidar, scene.camera)
    clean = ~scene.lidar_is_outlier[proj.index]
    truth = scene.depth[proj.rows, proj.cols][clean]
    rel = np.abs(proj.depth[clean] - truth) / truth
    assert np.median(rel) < 0.01


@pytest.mark.parametrize(
    ("name", "valid_share", "depth_range"),
    [("tum", 0.808, (1.46, 9.33)), ("nyu", 0.928, (1.39, 6.69)), ("sun", 0.818, (1.06, 9.87))],
)
def test_rgbd_samples_decode_as_the_readme_says(
    sampledata_dir: Path, name: str, valid_share: float, depth_range: tuple[float, float]
) -> None:
    from dpt_ros.synthetic import load_rgbd_sample, scene_from_rgbd

    root = sampledata_dir / "rgbd"
    if not (root / name).is_dir():
        pytest.skip(f"rgbd/{name} is not present")
    rgb, depth, camera = load_rgbd_sample(root, name)
    assert rgb.shape == (480, 640, 3) and camera.size == (640, 480)
    valid = np.isfinite(depth)
    assert valid.mean() == pytest.approx(valid_share, abs=0.002)
    assert np.nanmin(depth) == pytest.approx(depth_range[0], abs=0.01)
    assert np.nanmax(depth) == pytest.approx(depth_range[1], abs=0.01)
    scene = scene_from_rgbd(root, name)
    proj = project_lidar(scene.lidar_points, scene.T_cam_lidar, scene.camera)
    assert len(proj) > 5000
