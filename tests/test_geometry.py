"""Camera model: CameraInfo validation, scaling, projection with distortion, back-projection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dpt_ros.geometry import (
    CameraModel,
    as_transform,
    backproject_depth,
    transform_from_quaternion,
    transform_points,
)

K_VGA = [500.0, 0.0, 319.5, 0.0, 510.0, 239.5, 0.0, 0.0, 1.0]

# Realistic coefficient sets: a wide-angle lens, a rational (e.g. RealSense/Azure) model and a
# fisheye.
DISTORTED = {
    "plumb_bob": [-0.28, 0.07, 1e-3, -2e-3, 0.0],
    "rational_polynomial": [0.8, -0.05, 5e-4, -3e-4, 0.01, 1.15, 0.1, 0.005],
    "equidistant": [-0.013, 0.006, -0.004, 0.001],
}


def distorted_camera(model: str) -> CameraModel:
    return CameraModel.from_camera_info(K_VGA, DISTORTED[model], model, 640, 480)


def pixel_grid(camera: CameraModel, step: int = 16) -> np.ndarray:
    u, v = np.meshgrid(
        np.arange(0, camera.width, step, dtype=float),
        np.arange(0, camera.height, step, dtype=float),
    )
    return np.stack([u.ravel(), v.ravel()], axis=1)


def test_from_camera_info_takes_plain_sequences() -> None:
    cam = CameraModel.from_camera_info(K_VGA, [0.0] * 5, "plumb_bob", 640, 480)
    assert cam.K.shape == (3, 3) and cam.K.dtype == np.float64
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (500.0, 510.0, 319.5, 239.5)
    assert cam.size == (640, 480)
    assert not cam.is_distorted  # all-zero plumb_bob is a pinhole
    assert not cam.K.flags.writeable


@pytest.mark.parametrize(("model", "d"), [("", [0.0] * 5), ("none", []), ("plumb_bob", [])])
def test_no_coefficients_means_no_distortion(model: str, d: list[float]) -> None:
    cam = CameraModel.from_camera_info(K_VGA, d, model, 640, 480)
    assert not cam.is_distorted and cam.D.size == 0
    fields = cam.camera_info_fields()
    assert fields["distortion_model"] == "plumb_bob" and fields["d"] == [0.0] * 5


def test_cameras_compare_by_value() -> None:
    a = CameraModel.from_camera_info(K_VGA, DISTORTED["plumb_bob"], "plumb_bob", 640, 480)
    b = CameraModel.from_camera_info(list(K_VGA), DISTORTED["plumb_bob"], "plumb_bob", 640, 480)
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != a.scaled(320, 240) and a != CameraModel.from_camera_info(K_VGA, [], "", 640, 480)


@pytest.mark.parametrize(
    ("k", "d", "model", "size", "message"),
    [
        ([500.0, 0.0, 319.5, 0.0], [], "none", (640, 480), "3x3"),
        ([-500.0, 0, 319.5, 0, 500, 239.5, 0, 0, 1], [], "none", (640, 480), "focal"),
        ([500.0, 0, 319.5, 0, 0, 239.5, 0, 0, 1], [], "none", (640, 480), "focal"),
        ([0.0] * 9, [], "none", (640, 480), "not calibrated"),
        ([500.0, 0, 319.5, 0, 500, np.nan, 0, 0, 1], [], "none", (640, 480), "non-finite"),
        ([500.0, 0, 319.5, 0, 500, 239.5, 0, 0, 2], [], "none", (640, 480), "last row"),
        (K_VGA, [0.1, 0.0, 0.0], "plumb_bob", (640, 480), "4 or 5 coefficients"),
        (K_VGA, [0.1] * 5, "rational_polynomial", (640, 480), "8 coefficients"),
        (K_VGA, [0.1] * 5, "equidistant", (640, 480), "4 coefficients"),
        (K_VGA, [0.1], "none", (640, 480), "D empty or all zero"),
        (K_VGA, [], "brown_conrady_9000", (640, 480), "unknown distortion model"),
        (K_VGA, [], "none", (0, 480), "positive integers"),
        (K_VGA, [], "none", (640.5, 480), "positive integers"),
    ],
)
def test_bad_camera_info_is_rejected(k, d, model, size, message) -> None:
    with pytest.raises(ValueError, match=message):
        CameraModel.from_camera_info(k, d, model, *size)


def test_scaled_keeps_pixel_centres() -> None:
    cam = distorted_camera("plumb_bob")
    points = np.array([[0.3, -0.2, 2.0], [-0.5, 0.4, 3.0], [0.0, 0.0, 1.0]])
    uv, valid = cam.project(points)
    assert valid.all()
    small = cam.scaled(160, 120)
    uv_small, _ = small.project(points)
    np.testing.assert_allclose(uv_small, (uv + 0.5) * 0.25 - 0.5, atol=1e-9)
    np.testing.assert_allclose(small.scaled(640, 480).K, cam.K, atol=1e-12)
    np.testing.assert_array_equal(small.D, cam.D)


def test_pinhole_projection_matches_the_formula() -> None:
    cam = CameraModel.from_camera_info(K_VGA, [], "", 640, 480)
    uv, valid = cam.project(np.array([[1.0, 0.5, 4.0]]))
    np.testing.assert_allclose(uv[0], [500 * 0.25 + 319.5, 510 * 0.125 + 239.5])
    assert valid[0]


@pytest.mark.parametrize("model", ["plumb_bob", "rational_polynomial"])
def test_projection_matches_opencv(model: str) -> None:
    cam = distorted_camera(model)
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-0.6, 0.6, (200, 2)), np.ones(200)] * rng.uniform(1, 30, (200, 1))
    uv, valid = cam.project(points)
    ref, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), cam.K, cam.D)
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-6)
    assert valid.sum() > 150


def test_equidistant_projection_matches_opencv_fisheye() -> None:
    cam = distorted_camera("equidistant")
    rng = np.random.default_rng(1)
    points = np.c_[rng.uniform(-0.6, 0.6, (200, 2)), np.ones(200)] * rng.uniform(1, 30, (200, 1))
    uv, _ = cam.project(points)
    ref, _ = cv2.fisheye.projectPoints(
        points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), cam.K, cam.D
    )
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-6)


@pytest.mark.parametrize("model", sorted(DISTORTED))
def test_undistort_then_project_round_trip(model: str) -> None:
    cam = distorted_camera(model)
    uv = pixel_grid(cam, step=8)
    rays = cam.undistort_pixels(uv)
    assert np.isfinite(rays).all()
    back, valid = cam.project(np.c_[rays, np.ones(len(rays))] * 7.0)
    assert valid.all()
    assert np.abs(back - uv).max() < 1e-3


@pytest.mark.parametrize("model", ["plumb_bob", "rational_polynomial"])
def test_undistort_matches_opencv(model: str) -> None:
    cam = distorted_camera(model)
    uv = pixel_grid(cam, step=32)
    ours = cam.undistort_pixels(uv)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    ref = cv2.undistortPoints(uv.reshape(-1, 1, 2), cam.K, cam.D, criteria=criteria)
    ref = ref.reshape(-1, 2)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_undistort_pixels_keeps_leading_shape() -> None:
    cam = distorted_camera("plumb_bob")
    uv = np.zeros((4, 5, 2))
    assert cam.undistort_pixels(uv).shape == (4, 5, 2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        cam.undistort_pixels(np.zeros((4, 3)))


def test_projection_validity() -> None:
    cam = CameraModel.pinhole(500, 500, 319.5, 239.5, 640, 480)
    points = np.array(
        [
            [0.0, 0.0, 5.0],  # centre
            [0.0, 0.0, -5.0],  # behind
            [10.0, 0.0, 1.0],  # right of the image
            [np.nan, 0.0, 5.0],
            [0.0, 0.0, np.inf],
            [-319.5 / 500 * 2, -239.5 / 500 * 2, 2.0],  # exactly the top-left pixel centre
            [-320.0 / 500 * 2, 0.0, 2.0],  # the left edge of pixel 0: inside
            [(640 - 0.5 - 319.5) / 500 * 2, 0.0, 2.0],  # the right edge: outside
        ]
    )
    _, valid = cam.project(points)
    np.testing.assert_array_equal(valid, [True, False, False, False, False, True, True, False])


def test_far_off_axis_points_do_not_fold_back_into_the_image() -> None:
    # Strong barrel distortion: r_d = r (1 - 0.4 r^2) peaks at r = 0.91 and then falls, so a
    # point 60 degrees off to the right (r = 1.7) would otherwise land in the left of the image.
    cam = CameraModel.from_camera_info(K_VGA, [-0.4, 0.0, 0.0, 0.0, 0.0], "plumb_bob", 640, 480)
    far = np.array([[1.7, 0.0, 1.0]])
    naive = cam.normalized_to_pixels(cam.distort_normalized(far[:, :2]))
    assert 0 <= naive[0, 0] < 640  # the fold-back is real
    _, valid = cam.project(far)
    assert not valid[0]


@pytest.mark.parametrize("model", ["none", "plumb_bob", "equidistant"])
def test_backproject_depth_inverts_projection(model: str) -> None:
    if model == "none":
        cam = CameraModel.from_camera_info(K_VGA, [], model, 640, 480)
    else:
        cam = distorted_camera(model)
    rng = np.random.default_rng(2)
    depth = rng.uniform(0.5, 20.0, (480, 640)).astype(np.float32)
    depth[0, 0], depth[1, 1], depth[2, 2], depth[3, 3] = 0.0, np.nan, np.inf, -1.0
    points = backproject_depth(depth, cam)
    assert points.shape == (480, 640, 3) and points.dtype == np.float32
    bad = np.zeros((480, 640), dtype=bool)
    bad[[0, 1, 2, 3], [0, 1, 2, 3]] = True
    assert np.isnan(points[bad]).all()
    good = points[~bad]
    assert np.isfinite(good).all()
    np.testing.assert_allclose(good[:, 2], depth[~bad], rtol=1e-6)
    uv, valid = cam.project(good.astype(np.float64))
    assert valid.all()
    v, u = np.nonzero(~bad)
    assert np.abs(uv - np.c_[u, v]).max() < 2e-3  # float32 points


def test_backproject_depth_range_and_shape_checks() -> None:
    cam = CameraModel.pinhole(100, 100, 31.5, 23.5, 64, 48)
    depth = np.full((48, 64), 5.0)
    assert np.isnan(backproject_depth(depth, cam, max_depth=4.0)).all()
    assert np.isfinite(backproject_depth(depth, cam, min_depth=1.0)).all()
    with pytest.raises(ValueError, match="scaled"):
        backproject_depth(np.ones((24, 32)), cam)
    with pytest.raises(ValueError, match="2-D"):
        backproject_depth(np.ones((48, 64, 1)), cam)


def test_ray_grid_is_cached_and_read_only() -> None:
    cam = distorted_camera("plumb_bob")
    assert cam.ray_grid is cam.ray_grid
    assert not cam.ray_grid.flags.writeable
    np.testing.assert_array_equal(cam.ray_grid[..., 2], 1.0)


def test_from_fov_and_camera_info_fields_round_trip() -> None:
    cam = CameraModel.from_fov(640, 480, 90.0)
    assert cam.fx == pytest.approx(320.0) and cam.cx == 319.5 and cam.cy == 239.5
    fields = distorted_camera("rational_polynomial").camera_info_fields()
    again = CameraModel.from_camera_info(
        fields["k"], fields["d"], fields["distortion_model"], fields["width"], fields["height"]
    )
    np.testing.assert_array_equal(again.K, np.reshape(K_VGA, (3, 3)))
    assert again.distortion_model == "rational_polynomial" and len(fields["p"]) == 12


def test_transforms() -> None:
    # 90 degrees about z: x -> y.
    half = np.sqrt(0.5)
    T = transform_from_quaternion([1.0, 2.0, 3.0], [0.0, 0.0, half, half])
    np.testing.assert_allclose(T[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    points = np.random.default_rng(3).normal(size=(100, 4)).astype(np.float32)
    expected = points[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(transform_points(T, points), expected, atol=1e-12)
    with pytest.raises(ValueError, match="rotation"):
        as_transform(np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="4x4"):
        as_transform(np.eye(3))
    with pytest.raises(ValueError, match="Nx3"):
        transform_points(T, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="quaternion"):
        transform_from_quaternion([0, 0, 0], [0, 0, 0, 0])


# ---------------------------------------------------------------------------- skew and edges
K_SKEWED = [400.0, 3.5, 150.0, 0.0, 420.0, 110.0, 0.0, 0.0, 1.0]


def test_skew_is_used_both_ways_by_the_pinhole_equations() -> None:
    # CameraInfo K may carry a skew s = K[0][1]: u = fx x + s y + cx, v = fy y + cy (x, y = X/Z,
    # Y/Z). OpenCV's projectPoints ignores s, so the reference is the formula, by hand.
    cam = CameraModel.from_camera_info(K_SKEWED, [], "", 320, 240)
    point = np.array([[0.4, -0.3, 2.0]])  # x = 0.2, y = -0.15
    uv, valid = cam.project(point)
    assert valid[0]
    np.testing.assert_allclose(uv[0], [400 * 0.2 + 3.5 * -0.15 + 150, 420 * -0.15 + 110])
    # Back: the ray through pixel (u, v) is y = (v - cy) / fy, x = (u - cx - s y) / fx.
    u, v = 37, 201
    y = (v - 110.0) / 420.0
    x = (u - 150.0 - 3.5 * y) / 400.0
    np.testing.assert_allclose(cam.undistort_pixels(np.array([u, v], float)), [x, y], rtol=1e-12)
    np.testing.assert_allclose(cam.ray_grid[v, u], [x, y, 1.0], rtol=1e-6)
    depth = np.full((240, 320), 5.0)
    np.testing.assert_allclose(backproject_depth(depth, cam)[v, u], [5 * x, 5 * y, 5.0], rtol=1e-6)
    # Halving the image scales the skew with the columns.
    assert cam.scaled(160, 120).K[0, 1] == pytest.approx(1.75)


def test_skewed_projection_and_back_projection_are_inverse() -> None:
    cam = CameraModel.from_camera_info(K_SKEWED, [], "", 320, 240)
    depth = np.linspace(1.0, 9.0, 320 * 240).reshape(240, 320)
    points = backproject_depth(depth, cam).reshape(-1, 3).astype(np.float64)
    uv, valid = cam.project(points)
    assert valid.all()
    v, u = np.mgrid[0:240, 0:320]
    np.testing.assert_allclose(uv, np.stack([u.ravel(), v.ravel()], axis=1), atol=1e-3)


def test_the_image_ends_half_a_pixel_past_the_last_centre() -> None:
    # Pixel centres are integers, so the image spans [-0.5, W - 0.5) x [-0.5, H - 0.5): a point
    # on the bottom (or right) edge is outside, one just above it is in the last row, whose
    # index H - 1 a caller can use without a bounds check.
    width, height, f = 64, 48, 50.0
    cam = CameraModel.pinhole(f, f, 31.5, 23.5, width, height)

    def at(u: float, v: float, z: float = 4.0) -> np.ndarray:
        return np.array([(u - 31.5) / f * z, (v - 23.5) / f * z, z])

    eps = 1e-6
    cases = {
        (-0.5, 10.0): True,  # left edge: inside
        (width - 0.5, 10.0): False,  # right edge: outside
        (width - 0.5 - eps, 10.0): True,
        (10.0, -0.5): True,  # top edge: inside
        (10.0, height - 0.5): False,  # bottom edge: outside
        (10.0, height - 0.5 - eps): True,
        (10.0, height - 0.5 + eps): False,
    }
    points = np.array([at(u, v) for u, v in cases])
    _, valid = cam.project(points)
    assert valid.tolist() == list(cases.values())

    from dpt_ros.align import project_lidar

    projection = project_lidar(points, np.eye(4), cam, zbuffer_window=0)
    assert projection.index.tolist() == [i for i, ok in enumerate(cases.values()) if ok]
    assert projection.rows.max() == height - 1 and projection.cols.max() == width - 1
    assert projection.rows.min() == 0 and projection.cols.min() == 0
