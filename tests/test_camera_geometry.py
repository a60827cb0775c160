"""Camera geometry as sensor_msgs/CameraInfo defines it (issue 10, section 1): raw vs rectified
images, binning and ROI (image_geometry), rectification inside the pipeline, and the REP 117/118
invalid values of the metric depth (section 3).

Expected intrinsics are worked out by hand from image_geometry's rule (ROI offset subtracted
from the principal point, then binning dividing the rows of K and P).
"""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from dpt_ros.align import project_lidar
from dpt_ros.engine import Prediction
from dpt_ros.geometry import CameraModel, resolve_image_type
from dpt_ros.messages import CameraInfoConversionError, camera_info_to_camera
from dpt_ros.pipeline import Frame, Pipeline, PipelineConfig, rep117_depth

# A camera calibrated at 1280x960; its rectified camera has other intrinsics.
K_FULL = [1000.0, 0.0, 640.5, 0.0, 1010.0, 479.5, 0.0, 0.0, 1.0]
P_FULL = [990.0, 0.0, 630.0, 0.0, 0.0, 995.0, 470.0, 0.0, 0.0, 0.0, 1.0, 0.0]
D_FULL = [-0.2, 0.05, 0.001, -0.002, 0.0]


def info(
    k=K_FULL,
    d=D_FULL,
    p=P_FULL,
    r=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    width=1280,
    height=960,
    binning=(0, 0),
    roi=(0, 0, 0, 0),
    model="plumb_bob",
) -> SimpleNamespace:
    """A CameraInfo as the readers see it (same attribute names as sensor_msgs/CameraInfo)."""
    x, y, h, w = roi
    return SimpleNamespace(
        k=list(k),
        d=list(d),
        r=list(r),
        p=list(p),
        distortion_model=model,
        width=width,
        height=height,
        binning_x=binning[0],
        binning_y=binning[1],
        roi=SimpleNamespace(x_offset=x, y_offset=y, height=h, width=w, do_rectify=False),
    )


def intrinsics(matrix: np.ndarray) -> tuple[float, float, float, float]:
    return matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]


# ------------------------------------------------------------------------ binning and ROI
def test_binning_divides_focal_lengths_and_principal_point() -> None:
    cam = camera_info_to_camera(info(binning=(2, 2)))
    assert cam.size == (640, 480)
    assert intrinsics(cam.K) == (500.0, 505.0, 320.25, 239.75)
    assert intrinsics(cam.P) == (495.0, 497.5, 315.0, 235.0)
    np.testing.assert_array_equal(cam.D, D_FULL)  # distortion acts on normalised coordinates


def test_roi_moves_the_principal_point_and_sets_the_size() -> None:
    cam = camera_info_to_camera(info(roi=(320, 240, 480, 640)))
    assert cam.size == (640, 480)
    assert intrinsics(cam.K) == (1000.0, 1010.0, 320.5, 239.5)
    assert intrinsics(cam.P) == (990.0, 995.0, 310.0, 230.0)


def test_roi_and_binning_together() -> None:
    # ROI first (full-resolution coordinates), then binning: cx = (640.5 - 320) / 2.
    cam = camera_info_to_camera(info(roi=(320, 240, 480, 640), binning=(2, 4)))
    assert cam.size == (320, 120)
    assert intrinsics(cam.K) == (500.0, 252.5, 160.25, 59.875)
    assert intrinsics(cam.P) == (495.0, 248.75, 155.0, 57.5)


def test_binned_roi_camera_sees_points_where_the_full_camera_does() -> None:
    full = CameraModel.from_camera_info(K_FULL, [], "none", 1280, 960)
    part = camera_info_to_camera(info(d=[], roi=(320, 240, 480, 640), binning=(2, 2)))
    points = np.array([[0.1, -0.05, 2.0], [-0.2, 0.1, 3.0], [0.05, 0.02, 5.0]])
    uv_full, ok_full = full.project(points)
    uv_part, ok_part = part.project(points)
    assert ok_full.all() and ok_part.all()
    np.testing.assert_allclose(uv_part, (uv_full - [320.0, 240.0]) / 2.0, atol=1e-9)


@pytest.mark.parametrize(
    ("roi", "message"),
    [((1000, 0, 480, 640), "does not fit"), ((0, 0, 480, 0), "does not fit")],
)
def test_an_roi_outside_the_image_is_refused(roi, message) -> None:
    with pytest.raises(CameraInfoConversionError, match=message):
        camera_info_to_camera(info(roi=roi))


def test_a_real_camera_info_message_is_read_with_binning_and_roi() -> None:
    msgs = pytest.importorskip("sensor_msgs.msg")
    msg = msgs.CameraInfo(width=1280, height=960, distortion_model="plumb_bob", d=D_FULL)
    msg.k, msg.p, msg.binning_x, msg.binning_y = K_FULL, P_FULL, 2, 2
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 320, 240, 640, 480
    cam = camera_info_to_camera(msg)  # R is all zero in a fresh message: identity
    assert cam.size == (320, 240) and cam.R is None
    assert intrinsics(cam.K) == (500.0, 505.0, 160.25, 119.75)


def test_pipeline_accepts_a_binned_image_and_builds_its_cloud() -> None:
    cam = camera_info_to_camera(info(d=[], binning=(2, 2)))
    metres = np.linspace(2.0, 3.0, 480 * 640, dtype=np.float32).reshape(480, 640)
    frame = Frame(rgb=np.zeros((480, 640, 3), np.uint8), stamp_ns=1, camera=cam)
    config = PipelineConfig(cloud_organized=True)
    result = Pipeline(StandIn(metres, "metric_depth"), config).process(frame, want_points=True)
    assert result.camera is cam and not result.notes
    assert result.points.shape == (480, 640, 3)
    # pixel (row 0, col 0): x = (0 - cx) / fx * z, y = (0 - cy) / fy * z, binned cx, cy, fx, fy
    z = float(metres[0, 0])
    np.testing.assert_allclose(
        result.points[0, 0], [-320.25 / 500.0 * z, -239.75 / 505.0 * z, z], rtol=1e-5
    )


def test_a_flat_depth_prediction_is_noted() -> None:
    frame = Frame(rgb=np.zeros((8, 8, 3), np.uint8), stamp_ns=1)
    result = Pipeline(StandIn(np.zeros((8, 8), np.float32))).process(frame)
    assert any("is flat (every pixel 0)" in note for note in result.notes)


# ------------------------------------------------------------------------ raw vs rectified
class StandIn:
    """Engine stand-in: a fixed depth map at the input size; records the images it got."""

    depth_model = segmentation_model = True

    def __init__(self, depth: np.ndarray, semantics: str = "relative_inverse_depth", value=None):
        self.depth, self.semantics, self.images = depth, semantics, []
        if value is not None:
            self.depth = np.full_like(depth, value)

    def infer(self, rgb: np.ndarray, want_depth: bool = True, want_labels=None) -> Prediction:
        self.images.append(rgb)
        labels = np.ones(rgb.shape[:2], np.uint8) if want_labels else None
        return Prediction(self.depth.copy(), self.semantics, labels, {})


def test_rectified_images_use_p_raw_images_k_and_d() -> None:
    cam = camera_info_to_camera(info())
    frame = dict(rgb=np.zeros((960, 1280, 3), np.uint8), stamp_ns=1, camera=cam)
    engine = StandIn(np.ones((960, 1280), np.float32), "metric_depth")
    raw = Pipeline(engine, PipelineConfig(image_type="raw")).process(Frame(**frame))
    rect = Pipeline(engine, PipelineConfig(image_type="rectified")).process(Frame(**frame))
    assert raw.camera is cam and raw.camera.is_distorted
    assert intrinsics(rect.camera.K) == (990.0, 995.0, 630.0, 470.0)
    assert not rect.camera.is_distorted
    fields = rect.camera.camera_info_fields()
    assert fields["p"] == P_FULL and fields["k"] == [990, 0, 630, 0, 995, 470, 0, 0, 1]
    assert fields["d"] == [0.0] * 5 and fields["r"] == [1, 0, 0, 0, 1, 0, 0, 0, 1]


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("/cam/image_rect", "rectified"),
        ("/cam/image_rect_color/compressed", "rectified"),
        ("/cam/image_raw", "raw"),
        ("/kitti/camera_color_left/image_raw", "raw"),
        ("", "raw"),
    ],
)
def test_auto_follows_image_proc_topic_names(topic: str, expected: str) -> None:
    assert resolve_image_type("auto", topic) == expected
    assert resolve_image_type("rectified", topic) == "rectified"


def test_auto_in_the_pipeline_uses_the_frame_topic() -> None:
    cam = camera_info_to_camera(info())
    engine = StandIn(np.ones((960, 1280), np.float32), "metric_depth")
    frame = Frame(np.zeros((960, 1280, 3), np.uint8), 1, camera=cam, image_topic="/c/image_rect")
    assert not Pipeline(engine).process(frame).camera.is_distorted


def test_rectified_without_p_is_a_note_not_a_crash() -> None:
    cam = camera_info_to_camera(info(p=[0.0] * 12))
    engine = StandIn(np.ones((960, 1280), np.float32), "metric_depth")
    frame = Frame(np.zeros((960, 1280, 3), np.uint8), 1, camera=cam)
    result = Pipeline(engine, PipelineConfig(image_type="rectified")).process(frame)
    assert result.camera is None and "no projection matrix P" in " ".join(result.notes)


# KITTI raw-data calibration (2011_09_26, camera 02), as kitti2bag writes it into CameraInfo:
# K and D of the raw camera, R_rect_02 and P_rect_02, next to rectified 1242x375 images.
KITTI_K = [959.791, 0.0, 696.0217, 0.0, 956.9251, 224.1806, 0.0, 0.0, 1.0]
KITTI_D = [-0.3691481, 0.1968681, 0.001353473, 0.0005677587, -0.06770705]
KITTI_R_RECT_02 = [0.9999758, -0.005267463, -0.004552439, 0.005251945, 0.9999804,
                   -0.003413835, 0.004570332, 0.003389843, 0.9999838]  # fmt: skip
KITTI_P_RECT_02 = [721.5377, 0.0, 609.5593, 44.85728, 0.0, 721.5377, 172.854, 0.2163791,
                   0.0, 0.0, 1.0, 0.002745884]  # fmt: skip
KITTI_R_RECT_00 = [[0.9999239, 0.00983776, -0.007445048], [-0.009869795, 0.9999421, -0.004278459],
                   [0.007402527, 0.004351614, 0.9999631]]  # fmt: skip
KITTI_T_CAM0_VELO = [[0.007533745, -0.9999714, -0.000616602, -0.004069766],
                     [0.01480249, 0.0007280733, -0.9998902, -0.07631618],
                     [0.9998621, 0.00752379, 0.01480755, -0.2717806], [0, 0, 0, 1]]  # fmt: skip


def test_kitti_bag_lidar_lands_where_the_devkit_puts_it() -> None:
    """The devkit's projection of a Velodyne point into image 02 is P_rect_02 R_rect_00
    T_cam0_velo x. The bag's TF (kitti2bag / pykitti) gives T_cam2_velo = T2 R_rect_00
    T_cam0_velo with T2 the offset of camera 2 in P_rect_02's last column (pykitti keeps only
    its x, Tx / fx, which moves points by up to half a pixel; the full offset is used here so
    that the check is exact). Projecting with P (rectified) must land on the devkit's pixel,
    projecting with K and D (raw) must not."""
    R_rect = np.eye(4)
    R_rect[:3, :3] = KITTI_R_RECT_00
    P = np.reshape(KITTI_P_RECT_02, (3, 4))
    T2 = np.eye(4)
    T2[:3, 3] = np.linalg.solve(P[:, :3], P[:, 3])
    T_cam2_velo = T2 @ R_rect @ np.asarray(KITTI_T_CAM0_VELO)
    rng = np.random.default_rng(0)
    velo = np.column_stack(
        [rng.uniform(6, 60, 4000), rng.uniform(-15, 15, 4000), rng.uniform(-1.7, 1.0, 4000)]
    )
    devkit = (
        np.reshape(KITTI_P_RECT_02, (3, 4))
        @ (R_rect @ KITTI_T_CAM0_VELO)
        @ np.c_[velo, np.ones(len(velo))].T
    ).T
    devkit_uv = devkit[:, :2] / devkit[:, 2:]

    msg = info(k=KITTI_K, d=KITTI_D, r=KITTI_R_RECT_02, p=KITTI_P_RECT_02, width=1242, height=375)
    raw = camera_info_to_camera(msg)
    rectified = Pipeline(StandIn(np.ones((375, 1242), np.float32)))._cached_camera(
        raw, ("rectified",)
    )
    for camera, bound in ((rectified, 1e-6), (raw, None)):
        proj = project_lidar(velo, T_cam2_velo, camera, min_depth=1.0, zbuffer_window=0)
        error = np.linalg.norm(proj.uv - devkit_uv[proj.index], axis=1)
        assert len(proj) > 500
        if bound is not None:
            assert error.max() < bound, error.max()
        else:  # the old way: tens of pixels off
            assert np.median(error) > 20.0, np.median(error)


# ------------------------------------------------------------------------ rectify in the core
def test_rectify_puts_a_raw_image_on_the_rectified_grid(monkeypatch) -> None:
    """A raw image made from a known rectified picture by the camera model's own (Newton)
    undistortion must come back as that picture: OpenCV's maps against an independent path."""
    w, h = 160, 120
    k = [120.0, 0, 80.5, 0, 121.0, 60.5, 0, 0, 1]
    d = [-0.25, 0.06, 0.001, -0.001, 0.0]
    r = cv2.Rodrigues(np.array([0.01, -0.02, 0.005]))[0].reshape(-1)
    p = [100.0, 0, 78.0, 0, 0, 100.0, 61.0, 0, 0, 0, 1, 0]
    raw_cam = camera_info_to_camera(info(k=k, d=d, r=r, p=p, width=w, height=h))
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)

    def picture(uu, vv):  # smooth, so interpolation errors stay small
        return 128 + 60 * np.sin(uu / 9.0) + 50 * np.cos(vv / 7.0)

    # raw pixel -> ray (K, D inverse) -> rectified frame (R) -> rectified pixel (P)
    rays = raw_cam.undistort_pixels(np.stack([u, v], axis=-1).reshape(-1, 2))
    xyz = np.c_[rays, np.ones(len(rays))] @ np.reshape(r, (3, 3)).T
    uv_rect = xyz[:, :2] / xyz[:, 2:] * [100.0, 100.0] + [78.0, 61.0]
    raw = picture(uv_rect[:, 0], uv_rect[:, 1]).reshape(h, w)
    raw_rgb = np.clip(np.rint(raw), 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)

    calls = []
    real = cv2.initUndistortRectifyMap
    monkeypatch.setattr(cv2, "initUndistortRectifyMap", lambda *a: calls.append(1) or real(*a))
    engine = StandIn(np.ones((h, w), np.float32), "metric_depth")
    pipeline = Pipeline(engine, PipelineConfig(image_type="raw", rectify=True))
    for stamp in range(3):  # a new CameraModel per camera_info message, as front ends build
        cam = camera_info_to_camera(info(k=k, d=d, r=r, p=p, width=w, height=h))
        result = pipeline.process(Frame(raw_rgb, stamp, camera=cam))
    assert len(calls) == 1  # maps made once per camera
    got = engine.images[-1][..., 0].astype(np.float64)
    inner = (slice(15, h - 15), slice(15, w - 15))
    assert np.abs(got[inner] - picture(u, v)[inner]).max() < 3.0
    assert result.rgb is engine.images[-1]
    assert intrinsics(result.camera.K) == (100.0, 100.0, 78.0, 61.0)
    assert not result.camera.is_distorted


def test_labels_only_still_describe_their_grid() -> None:
    cam = camera_info_to_camera(info(d=[], binning=(2, 2)))
    engine = StandIn(np.ones((480, 640), np.float32))
    frame = Frame(np.zeros((480, 640, 3), np.uint8), 1, camera=cam)
    result = Pipeline(engine).process(frame, want_depth=False, want_labels=True)
    assert result.labels is not None and result.camera is cam


# ------------------------------------------------------------------------ REP 117 / 118
def test_relative_depth_invalid_values_follow_rep_117() -> None:
    # scale 1, shift 0: depth = 1 / p. Limits 0.1 m and 50 m.
    pred = np.array([np.nan, 0.0, -1.0, 0.01, 0.5, 20.0, np.inf], np.float32)
    depth = rep117_depth(pred, 1.0, 0.0, 0.1, 50.0, "relative_inverse_depth")
    # no estimate, at infinity (sky), beyond infinity, 100 m > max, 2 m, 0.05 m < min, non-finite
    expected = [np.nan, np.inf, np.inf, np.inf, 2.0, -np.inf, np.nan]
    np.testing.assert_array_equal(depth, np.array(expected, np.float32))
    assert depth.dtype == np.float32


def test_metric_model_invalid_values_follow_rep_117() -> None:
    pred = np.array([np.nan, 0.0, 100.0, 0.05, 2.0], np.float32)
    depth = rep117_depth(pred, 1.0, 0.0, 0.1, 50.0, "metric_depth")
    np.testing.assert_array_equal(
        depth, np.array([np.nan, np.nan, np.inf, -np.inf, 2.0], np.float32)
    )


def test_pipeline_metric_output_carries_the_rep_117_values() -> None:
    depth = np.array([[0.5, 0.01, 20.0, np.nan]], np.float32).repeat(4, axis=0)
    cam = CameraModel.pinhole(4.0, 4.0, 1.5, 1.5, 4, 4)
    frame = Frame(np.zeros((4, 4, 3), np.uint8), 1, camera=cam)
    config = PipelineConfig.from_dict({"align.min_depth": 0.1, "align.max_depth": 50.0})
    result = Pipeline(StandIn(1.0 / depth, "metric_depth"), config).process(frame, want_points=True)
    np.testing.assert_array_equal(
        result.metric[0], np.array([2.0, np.inf, -np.inf, np.nan], np.float32)
    )
    assert len(result.points) == 4  # only the finite column becomes points


@pytest.mark.parametrize("image_type", ["raw", "rectified"])
def test_published_camera_info_describes_the_output_grid(image_type: str) -> None:
    """What a front end publishes next to an output (``camera_to_camera_info(result.camera)``)
    reads back as exactly the camera of that output: binning, ROI and rectification already in
    it, scaled to the output size."""
    convert = pytest.importorskip("dpt_ros.ros.convert")
    cam = camera_info_to_camera(info(roi=(320, 240, 480, 640), binning=(2, 2)))
    engine = StandIn(np.ones((120, 160), np.float32), "metric_depth")  # output: half size
    frame = Frame(np.zeros((240, 320, 3), np.uint8), 1, camera=cam)
    result = Pipeline(engine, PipelineConfig(image_type=image_type)).process(frame)
    msg = convert.camera_to_camera_info(result.camera, convert.make_header(1, "cam"))
    again = camera_info_to_camera(msg)
    assert (msg.width, msg.height, msg.binning_x, msg.roi.width) == (160, 120, 0, 0)
    out = result.camera
    assert again.size == out.size == (160, 120) and again.distortion_model in ("none", "plumb_bob")
    for name in ("K", "D", "P"):
        np.testing.assert_array_equal(getattr(again, name), getattr(out, name))
    # hand-computed: ROI then binning, then the half-size scaling u' = (u + 0.5) / 2 - 0.5
    fx, fy, cx, cy = (990.0, 995.0, 630.0, 470.0) if image_type == "rectified" else K4
    expected = (fx / 4, fy / 4, ((cx - 320) / 2 + 0.5) / 2 - 0.5, ((cy - 240) / 2 + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(intrinsics(again.K), expected)
    assert again.is_distorted == (image_type == "raw")


K4 = (1000.0, 1010.0, 640.5, 479.5)
