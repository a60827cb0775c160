"""Camera geometry: the sensor_msgs/CameraInfo camera model, projection, back-projection.

Conventions follow ROS and OpenCV: optical frame (z forward, x right, y down), pixel (0, 0) is
the *centre* of the top-left pixel, and depth images hold z (not range) in metres.

Raw and rectified images (sensor_msgs/CameraInfo, REP 104, image_geometry): K and D describe the
raw (distorted) image, P's left 3x3 the rectified one, R the rotation of the rectified frame
(used to build rectification maps, as image_proc does). A ``CameraModel`` keeps all of them for
the image as delivered -- binning and region of interest applied as image_geometry's
``PinholeCameraModel.fromCameraInfo`` applies them -- and ``rectified()`` gives the camera of the
rectified image. As image_geometry's projection and depth_image_proc do, a rectified image is taken
to lie in the header's frame, and P's Tx/Ty (a stereo baseline) are not applied to points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

DISTORTION_MODELS = ("none", "plumb_bob", "rational_polynomial", "equidistant")
IMAGE_TYPES = ("auto", "raw", "rectified")

# Accepted coefficient counts per model. plumb_bob is (k1, k2, p1, p2[, k3]); rational_polynomial
# is (k1, k2, p1, p2, k3, k4, k5, k6); equidistant (fisheye) is (k1, k2, k3, k4).
_D_LENGTHS = {"plumb_bob": (4, 5), "rational_polynomial": (8,), "equidistant": (4,)}

# Aliases some drivers put in CameraInfo.distortion_model.
_MODEL_ALIASES = {
    "": "none",
    "pinhole": "none",
    "fisheye": "equidistant",
    "kannala_brandt": ("equidistant"),
}

_NEWTON_ITERATIONS = 20
_NEWTON_TOLERANCE = 1e-12


@dataclass(frozen=True, eq=False)
class CameraModel:
    """A calibrated camera as in sensor_msgs/CameraInfo (K, D, distortion_model, width, height,
    and optionally R and P) for the image as delivered: width x height pixels.

    K and D map this image's pixels to rays (the raw image). ``R`` (3x3 rotation, None =
    identity) and ``P`` (3x4 projection, None = [K | 0]) describe the rectified image of the same
    size; see ``rectified()``. Arrays are copied, converted to float64 and made read-only; bad
    values raise ValueError. Derived lookup tables (ray grid, rectification maps) are cached on
    the instance.
    """

    K: np.ndarray
    D: np.ndarray
    distortion_model: str
    width: int
    height: int
    R: np.ndarray | None = None
    P: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        K = np.array(self.K, dtype=np.float64)
        if K.shape == (9,):
            K = K.reshape(3, 3)
        if K.shape != (3, 3):
            raise ValueError(f"camera K must be 3x3 (or 9 values), got shape {K.shape}")
        if not np.all(np.isfinite(K)):
            raise ValueError(f"camera K has non-finite values: {K.tolist()}")
        if not np.any(K):
            raise ValueError("camera K is all zeros: the camera is not calibrated")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(
                f"camera focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}"
            )
        if abs(K[1, 0]) > 1e-9 or not np.allclose(K[2], (0.0, 0.0, 1.0)):
            raise ValueError(f"camera K must be upper triangular with last row (0, 0, 1), got {K}")

        model = str(self.distortion_model).strip().lower()
        model = _MODEL_ALIASES.get(model, model)
        if model not in DISTORTION_MODELS:
            raise ValueError(
                f"unknown distortion model {self.distortion_model!r}; "
                f"expected one of {DISTORTION_MODELS} (or '' for none)"
            )
        D = np.array([] if self.D is None else self.D, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(D)):
            raise ValueError(f"distortion coefficients D have non-finite values: {D.tolist()}")
        if D.size == 0:
            pass  # no coefficients: an undistorted camera whatever the model says
        elif model == "none":
            # Drivers often send D=[0]*5 with an empty model: harmless. Non-zero D is a mistake.
            if np.any(D):
                raise ValueError(f"distortion model 'none' needs D empty or all zero, got {D}")
            D = np.zeros(0)
        elif D.size not in _D_LENGTHS[model]:
            raise ValueError(
                f"distortion model {model!r} needs {' or '.join(map(str, _D_LENGTHS[model]))} "
                f"coefficients in D, got {D.size}"
            )
        elif model == "plumb_bob" and D.size == 4:
            D = np.append(D, 0.0)
        if not np.any(D):
            D = np.zeros(0)

        width, height = int(self.width), int(self.height)
        if width != self.width or height != self.height or width <= 0 or height <= 0:
            raise ValueError(
                f"camera width and height must be positive integers, got {self.width}x{self.height}"
            )
        R, P = _rotation_or_none(self.R), _projection_or_none(self.P)
        K.setflags(write=False)
        D.setflags(write=False)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", D)
        object.__setattr__(self, "distortion_model", model)
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "height", height)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CameraModel):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def key(self) -> tuple:
        """A hashable value identity: lets callers see whether a new CameraInfo really changed
        the camera (and keep cached ray grids and rectification maps when it did not)."""
        return (
            self.K.tobytes(),
            self.D.tobytes(),
            self.distortion_model,
            self.width,
            self.height,
            None if self.R is None else self.R.tobytes(),
            None if self.P is None else self.P.tobytes(),
        )

    _key = key

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_camera_info(
        cls,
        k: Sequence[float],
        d: Sequence[float],
        distortion_model: str,
        width: int,
        height: int,
        r: Sequence[float] | None = None,
        p: Sequence[float] | None = None,
        binning_x: int = 0,
        binning_y: int = 0,
        roi: tuple[int, int, int, int] | None = None,
    ) -> CameraModel:
        """Build from CameraInfo fields passed as plain sequences (msg.k, msg.d, ...).

        ``width`` x ``height`` is the calibrated (full) resolution. ``roi`` is
        (x_offset, y_offset, height, width) of sensor_msgs/RegionOfInterest, all zero or None =
        the full image. As image_geometry's ``PinholeCameraModel``: the ROI offset is subtracted
        from the principal points of K and P, then binning divides the rows of K and P (fx, cx,
        Tx by binning_x; fy, cy, Ty by binning_y; 0 counts as 1). The model's size is that of
        the delivered image: (ROI width or width) // binning_x, likewise for the height.
        An all-zero R or P (drivers of uncalibrated cameras send them) counts as not given.
        """
        K = np.array(k, dtype=np.float64).reshape(-1)
        P = None if p is None else np.array(p, dtype=np.float64).reshape(-1)
        bx, by = max(1, int(binning_x)), max(1, int(binning_y))
        x_off, y_off, roi_h, roi_w = (0, 0, 0, 0) if roi is None else (int(v) for v in roi)
        if min(x_off, y_off, roi_h, roi_w) < 0:
            raise ValueError(f"camera ROI must not be negative, got {roi}")
        full_w, full_h = width, height  # checked by the constructor
        if roi_w or roi_h:
            if not (roi_w and roi_h) or x_off + roi_w > full_w or y_off + roi_h > full_h:
                raise ValueError(
                    f"camera ROI {roi_w}x{roi_h} at ({x_off}, {y_off}) does not fit the "
                    f"calibrated {full_w}x{full_h} image"
                )
            full_w, full_h = roi_w, roi_h
        if K.size == 9 and (x_off or y_off or bx > 1 or by > 1):
            K = _roi_binned(K.reshape(3, 3), x_off, y_off, bx, by)
        if P is not None and P.size == 12 and np.any(P):
            P = _roi_binned(P.reshape(3, 4), x_off, y_off, bx, by)
        return cls(
            K,
            np.asarray(d, dtype=np.float64),
            distortion_model,
            full_w // bx if bx > 1 else full_w,
            full_h // by if by > 1 else full_h,
            R=None if r is None else np.asarray(r, dtype=np.float64),
            P=P,
        )

    @classmethod
    def pinhole(
        cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int
    ) -> CameraModel:
        """An undistorted camera from its four intrinsics."""
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return cls(K, np.zeros(0), "none", width, height)

    @classmethod
    def from_fov(cls, width: int, height: int, horizontal_fov_deg: float) -> CameraModel:
        """A centred, square-pixel pinhole camera with the given horizontal field of view.

        For uncalibrated sources (webcams, videos) where only a rough geometry is needed.
        """
        if not 0.0 < horizontal_fov_deg < 180.0:
            raise ValueError(f"horizontal_fov_deg must be in (0, 180), got {horizontal_fov_deg}")
        f = 0.5 * width / np.tan(np.radians(horizontal_fov_deg) / 2.0)
        return cls.pinhole(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    def camera_info_fields(self) -> dict:
        """CameraInfo fields (k, d, distortion_model, r, p, width, height) as plain lists.

        R and P are the model's own; when not given, R = I and P = [K | 0] (a monocular camera
        whose rectified image has the raw image's intrinsics). Binning and ROI are already in
        the model (its pixels are the delivered image's), so a message built from these fields
        has binning 0 and an empty ROI.
        """
        p = np.zeros((3, 4))
        p[:, :3] = self.K
        if self.P is not None:
            p = self.P.copy()
        if self.is_distorted:
            model, d = self.distortion_model, self.D.tolist()
        else:  # the form ROS tools expect for an undistorted camera
            model, d = "plumb_bob", [0.0] * 5
        return {
            "k": self.K.reshape(-1).tolist(),
            "d": d,
            "distortion_model": model,
            "r": (np.eye(3) if self.R is None else self.R).reshape(-1).tolist(),
            "p": p.reshape(-1).tolist(),
            "width": self.width,
            "height": self.height,
        }

    # ------------------------------------------------------------------ properties
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    @property
    def is_distorted(self) -> bool:
        return self.distortion_model != "none" and bool(np.any(self.D))

    # ------------------------------------------------------------------ resizing
    def scaled(self, width: int, height: int) -> CameraModel:
        """The same camera for an image resized to width x height.

        Pixel centres map as u' = (u + 0.5) * sx - 0.5, so the principal point moves with the
        half-pixel offset; distortion acts on normalised coordinates and is unchanged.
        """
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"scaled size must be positive, got {width}x{height}")
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1] *= sy
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        P = None
        if self.P is not None:
            P = self.P.copy()
            P[0] *= sx
            P[1] *= sy
            P[0, 2] = (self.P[0, 2] + 0.5) * sx - 0.5
            P[1, 2] = (self.P[1, 2] + 0.5) * sy - 0.5
        return CameraModel(K, self.D, self.distortion_model, int(width), int(height), R=self.R, P=P)

    # ------------------------------------------------------------------ rectification
    @property
    def needs_rectification(self) -> bool:
        """Whether the rectified image differs from the raw one (distortion, R or P != K)."""
        if self.is_distorted or (self.R is not None and not np.allclose(self.R, np.eye(3))):
            return True
        return self.P is not None and not np.allclose(self.P[:, :3], self.K)

    def rectified(self) -> CameraModel:
        """The camera of this image's rectified version: K = P's left 3x3, no distortion, the
        same size; R = I and P kept (its Tx/Ty too) for the published camera_info.

        Raises ValueError when the image needs rectification but CameraInfo gave no P.
        """
        if self.P is None:
            if self.needs_rectification:
                raise ValueError(
                    "camera_info has a distortion model or R but no projection matrix P: the "
                    "rectified camera is unknown (use image_type 'raw')"
                )
            return self
        return CameraModel(self.P[:, :3], [], "none", self.width, self.height, P=self.P)

    def rectify_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """cv2.remap maps from this (raw) image to the grid of ``rectified()`` (cached).

        OpenCV ``initUndistortRectifyMap(K, D, R, P)`` (``cv2.fisheye`` for equidistant), as
        image_geometry's ``rectifyImage``; fixed-point maps (CV_16SC2) for a fast remap.
        """
        maps = self._cache.get("rectify_maps")
        if maps is None:
            import cv2

            new_k = self.rectified().K
            R = np.eye(3) if self.R is None else self.R
            size = (self.width, self.height)
            if self.distortion_model == "equidistant" and self.is_distorted:
                maps = cv2.fisheye.initUndistortRectifyMap(
                    self.K, self.D.reshape(4, 1), R, new_k, size, cv2.CV_16SC2
                )
            else:
                D = self.D if self.is_distorted else np.zeros(5)
                maps = cv2.initUndistortRectifyMap(self.K, D, R, new_k, size, cv2.CV_16SC2)
            self._cache["rectify_maps"] = maps
        return maps

    def rectify_image(self, image: np.ndarray, interpolation: int | None = None) -> np.ndarray:
        """This camera's raw image -> the rectified image (same size, bilinear by default).

        Pixels that see nothing of the raw image are 0. ValueError if the size is not this
        camera's.
        """
        import cv2

        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"image is {image.shape[1]}x{image.shape[0]} but the camera is "
                f"{self.width}x{self.height}"
            )
        map1, map2 = self.rectify_maps()
        how = cv2.INTER_LINEAR if interpolation is None else interpolation
        return cv2.remap(image, map1, map2, how, borderMode=cv2.BORDER_CONSTANT)

    # ------------------------------------------------------------------ distortion
    def distort_normalized(self, xy: np.ndarray) -> np.ndarray:
        """Ideal normalised coordinates (x/z, y/z) -> distorted normalised coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        if not self.is_distorted:
            return xy.copy()
        x, y = xy[..., 0], xy[..., 1]
        if self.distortion_model == "equidistant":
            r = np.hypot(x, y)
            theta = np.arctan(r)
            theta_d = theta * _equidistant_poly(theta * theta, self.D)
            ratio = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
            return np.stack([x * ratio, y * ratio], axis=-1)
        k1, k2, p1, p2, k3 = self.D[:5]
        r2 = x * x + y * y
        radial = _radial_factor(r2, self.D)
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        return np.stack([xd, yd], axis=-1)

    def undistort_normalized(self, xy_distorted: np.ndarray) -> np.ndarray:
        """Distorted normalised coordinates -> ideal ones (Newton iterations, vectorised).

        Points where the iteration does not converge (outside the model's valid range) are NaN.
        """
        xyd = np.asarray(xy_distorted, dtype=np.float64)
        if not self.is_distorted:
            return xyd.copy()
        flat = xyd.reshape(-1, 2)
        if self.distortion_model == "equidistant":
            out = self._undistort_equidistant(flat)
        else:
            out = self._undistort_brown(flat)
        return out.reshape(xyd.shape)

    def _undistort_equidistant(self, xyd: np.ndarray) -> np.ndarray:
        theta_d = np.hypot(xyd[:, 0], xyd[:, 1])
        theta = theta_d.copy()
        k1, k2, k3, k4 = self.D
        for _ in range(_NEWTON_ITERATIONS):
            t2 = theta * theta
            f = theta * _equidistant_poly(t2, self.D) - theta_d
            df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
            step = f / np.where(np.abs(df) > 1e-12, df, 1e-12)
            theta = theta - step
            if np.all(np.abs(step) < _NEWTON_TOLERANCE):
                break
        bad = ~np.isfinite(theta) | (theta < 0) | (theta >= np.pi / 2)
        converged = np.abs(theta * _equidistant_poly(theta * theta, self.D) - theta_d) < 1e-9
        scale = np.where(theta_d > 1e-12, np.tan(theta) / np.maximum(theta_d, 1e-12), 1.0)
        out = xyd * scale[:, None]
        out[bad | ~converged] = np.nan
        return out

    def _undistort_brown(self, xyd: np.ndarray) -> np.ndarray:
        k1, k2, p1, p2, k3 = self.D[:5]
        xd, yd = xyd[:, 0], xyd[:, 1]
        x, y = xd.copy(), yd.copy()
        for _ in range(_NEWTON_ITERATIONS):
            r2 = x * x + y * y
            radial = _radial_factor(r2, self.D)
            dradial = _radial_factor_derivative(r2, self.D)
            fx = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x) - xd
            fy = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y - yd
            j00 = radial + 2.0 * x * x * dradial + 2.0 * p1 * y + 6.0 * p2 * x
            j01 = 2.0 * x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y
            j10 = 2.0 * x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y
            j11 = radial + 2.0 * y * y * dradial + 6.0 * p1 * y + 2.0 * p2 * x
            det = j00 * j11 - j01 * j10
            det = np.where(np.abs(det) > 1e-12, det, 1e-12)
            dx = (j11 * fx - j01 * fy) / det
            dy = (j00 * fy - j10 * fx) / det
            x, y = x - dx, y - dy
            if np.all(np.abs(dx) + np.abs(dy) < _NEWTON_TOLERANCE):
                break
        out = np.stack([x, y], axis=-1)
        # A solution is only accepted where the forward model is monotonic there (the
        # fold-back region of a radial polynomial also "solves" the equation).
        residual = np.abs(self.distort_normalized(out) - xyd).max(axis=1)
        r2 = x * x + y * y
        bad = ~(residual < 1e-9) | (r2 > self._max_valid_r2)
        out[bad] = np.nan
        return out

    @cached_property
    def _max_valid_r2(self) -> float:
        """Largest squared ideal radius up to which the distortion model is monotonic.

        Past it the polynomial folds back and far-off-axis points would land inside the image.
        """
        if not self.is_distorted:
            return np.inf
        r = np.linspace(0.0, 10.0, 20001)[1:]
        if self.distortion_model == "equidistant":
            theta = np.arctan(r)
            rd = theta * _equidistant_poly(theta * theta, self.D)
        else:
            rd = r * _radial_factor(r * r, self.D)
        falling = np.nonzero(np.diff(rd) <= 0)[0]
        return float(r[falling[0]] ** 2) if falling.size else np.inf

    # ------------------------------------------------------------------ pixels <-> rays
    def pixels_to_normalized(self, uv: np.ndarray) -> np.ndarray:
        """Pixel coordinates -> distorted normalised coordinates (inverse of K only)."""
        uv = np.asarray(uv, dtype=np.float64)
        y = (uv[..., 1] - self.cy) / self.fy
        x = (uv[..., 0] - self.cx - self.K[0, 1] * y) / self.fx
        return np.stack([x, y], axis=-1)

    def normalized_to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Distorted normalised coordinates -> pixel coordinates (K only)."""
        xy = np.asarray(xy, dtype=np.float64)
        u = self.fx * xy[..., 0] + self.K[0, 1] * xy[..., 1] + self.cx
        v = self.fy * xy[..., 1] + self.cy
        return np.stack([u, v], axis=-1)

    def undistort_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Pixels (..., 2) -> ideal normalised rays (x/z, y/z), same shape; NaN where the
        distortion model has no inverse."""
        uv = np.asarray(uv, dtype=np.float64)
        if uv.ndim == 0 or uv.shape[-1] != 2:
            raise ValueError(f"uv must have shape (..., 2), got {uv.shape}")
        return self.undistort_normalized(self.pixels_to_normalized(uv))

    def project(
        self, points_cam: np.ndarray, min_depth: float = 1e-6
    ) -> tuple[np.ndarray, np.ndarray]:
        """Project Nx3 camera-frame points to pixels.

        Returns (uv Nx2 float64, valid N bool). valid: finite, z > min_depth, inside the model's
        monotonic distortion range and inside the image: u in [-0.5, width - 0.5), v likewise.
        """
        pts = _as_points(points_cam, 3, "points_cam")
        z = pts[:, 2]
        valid = (z > min_depth) & (z < np.inf) & np.isfinite(pts[:, 0]) & np.isfinite(pts[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = pts[:, :2] / np.where(valid, z, 1.0)[:, None]
        if self.is_distorted:
            valid &= (xy * xy).sum(axis=1) < self._max_valid_r2
            xy = self.distort_normalized(xy)
        uv = self.normalized_to_pixels(xy)
        valid &= (
            (uv[:, 0] >= -0.5)
            & (uv[:, 0] < self.width - 0.5)
            & (uv[:, 1] >= -0.5)
            & (uv[:, 1] < self.height - 0.5)
        )
        return uv, valid

    @property
    def ray_grid(self) -> np.ndarray:
        """(height, width, 3) float32 rays (x/z, y/z, 1) through every pixel centre (cached).

        NaN where the distortion model has no inverse. Multiply by a z-depth image to get points.
        """
        grid = self._cache.get("ray_grid")
        if grid is None:
            u, v = np.meshgrid(
                np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64)
            )
            xy = self.undistort_pixels(np.stack([u.ravel(), v.ravel()], axis=1))
            grid = np.empty((self.height, self.width, 3), dtype=np.float32)
            grid[..., :2] = xy.reshape(self.height, self.width, 2)
            grid[..., 2] = 1.0
            grid.setflags(write=False)
            self._cache["ray_grid"] = grid
        return grid


def backproject_depth(
    depth: np.ndarray,
    camera: CameraModel,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
) -> np.ndarray:
    """z-depth image (H, W) in metres -> (H, W, 3) float32 camera-frame points.

    Pixels whose depth is not finite or outside (min_depth, max_depth] are NaN. Distorted cameras
    use the undistorted ray of each pixel.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be a 2-D (H, W) image, got shape {depth.shape}")
    if depth.shape != (camera.height, camera.width):
        raise ValueError(
            f"depth image is {depth.shape[1]}x{depth.shape[0]} but the camera is "
            f"{camera.width}x{camera.height}; use camera.scaled(width, height)"
        )
    d = depth.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d > min_depth) & (d <= max_depth)
    d = np.where(ok, d, np.float32(np.nan))
    return camera.ray_grid * d[..., None]


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to Nx3 points (extra columns are ignored); float64 Nx3."""
    T = as_transform(T)
    x, y, z = point_columns(points)
    out = np.empty((3, x.size))
    for i in range(3):
        transform_row(T, i, x, y, z, out=out[i])
    return out.T


def point_columns(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, z column views of an Nx3 (or wider, x/y/z first) numeric point array."""
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] < 3 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(
            f"points must be a numeric Nx3 array (extra columns allowed), got shape {arr.shape} "
            f"and dtype {arr.dtype}"
        )
    return arr[:, 0], arr[:, 1], arr[:, 2]


def transform_row(
    T: np.ndarray, row: int, x: np.ndarray, y: np.ndarray, z: np.ndarray, out=None
) -> np.ndarray:
    """One output coordinate of T applied to points given as columns, in float64.

    Column arithmetic instead of ``points @ R.T``: numpy sends that small-inner-dimension
    product to BLAS, which is over ten times slower here for LiDAR-sized clouds.
    """
    r = np.multiply(x, T[row, 0], out=out, dtype=np.float64)
    r += y * T[row, 1]
    r += z * T[row, 2]
    r += T[row, 3]
    return r


def as_transform(T: np.ndarray) -> np.ndarray:
    """Validate a 4x4 homogeneous rigid transform and return it as float64."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"transform must be 4x4, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError("transform has non-finite values")
    if not np.allclose(T[3], (0.0, 0.0, 0.0, 1.0)):
        raise ValueError(f"transform's last row must be (0, 0, 0, 1), got {T[3].tolist()}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
        raise ValueError("transform's 3x3 block is not a rotation matrix")
    return T


def transform_from_quaternion(
    translation: Sequence[float], quaternion_xyzw: Sequence[float]
) -> np.ndarray:
    """4x4 transform from a translation and a unit quaternion (x, y, z, w), as in tf2."""
    q = np.asarray(quaternion_xyzw, dtype=np.float64).reshape(-1)
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    if q.shape != (4,) or t.shape != (3,):
        raise ValueError(
            f"need a 3-vector translation and an (x, y, z, w) quaternion, got {t.shape}, {q.shape}"
        )
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} has zero or non-finite norm")
    x, y, z, w = q / norm
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = t
    return T


def resolve_image_type(image_type: str, topic: str = "") -> str:
    """'raw' or 'rectified' for an image_type setting and the image topic's name.

    'auto' follows image_proc's topic names, the only place the kind of image is stated: a
    last name component starting with ``image_rect`` (image_rect, image_rect_color) is
    rectified, anything else (image_raw, image_color, image, a webcam) raw. kitti2bag-made bags
    call their rectified images ``image_raw``: set 'rectified' for them.
    """
    if image_type not in IMAGE_TYPES:
        raise ValueError(f"image_type must be one of {IMAGE_TYPES}, got {image_type!r}")
    if image_type != "auto":
        return image_type
    last = topic.rstrip("/").rsplit("/", 1)[-1]
    if last == "compressed":  # image_transport: <image topic>/compressed
        last = topic.rstrip("/").rsplit("/", 2)[-2] if topic.count("/") else ""
    return "rectified" if last.startswith("image_rect") else "raw"


def _roi_binned(M: np.ndarray, x_off: int, y_off: int, bx: int, by: int) -> np.ndarray:
    # image_geometry PinholeCameraModel::fromCameraInfo: subtract the ROI offset from the
    # principal point, then divide row 0 by binning_x and row 1 by binning_y.
    M = M.copy()
    M[0, 2] -= x_off * M[2, 2]
    M[1, 2] -= y_off * M[2, 2]
    M[0] /= bx
    M[1] /= by
    return M


def _rotation_or_none(R: np.ndarray | None) -> np.ndarray | None:
    if R is None:
        return None
    R = np.array(R, dtype=np.float64).reshape(-1)
    if not np.any(R):
        return None
    if R.size != 9 or not np.all(np.isfinite(R)):
        raise ValueError(f"camera R must be 9 finite values, got {R.tolist()}")
    R = R.reshape(3, 3)
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
        raise ValueError(f"camera R is not a rotation matrix: {R.tolist()}")
    if np.array_equal(R, np.eye(3)):
        return None  # the same camera as one with no R given
    R.setflags(write=False)
    return R


def _projection_or_none(P: np.ndarray | None) -> np.ndarray | None:
    if P is None:
        return None
    P = np.array(P, dtype=np.float64).reshape(-1)
    if not np.any(P):
        return None
    if P.size != 12 or not np.all(np.isfinite(P)):
        raise ValueError(f"camera P must be 12 finite values (3x4), got {P.tolist()}")
    P = P.reshape(3, 4)
    if P[0, 0] <= 0 or P[1, 1] <= 0 or not np.allclose(P[2, :3], (0.0, 0.0, 1.0)):
        raise ValueError(
            f"camera P must have positive focal lengths and third row (0, 0, 1, 0), got {P}"
        )
    P.setflags(write=False)
    return P


def _radial_factor(r2: np.ndarray, D: np.ndarray) -> np.ndarray:
    k1, k2, p1, p2, k3 = D[:5]
    num = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    if D.size < 8:
        return num
    k4, k5, k6 = D[5:8]
    return num / (1.0 + r2 * (k4 + r2 * (k5 + r2 * k6)))


def _radial_factor_derivative(r2: np.ndarray, D: np.ndarray) -> np.ndarray:
    """d(radial factor) / d(r^2)."""
    k1, k2, p1, p2, k3 = D[:5]
    num = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    dnum = k1 + r2 * (2.0 * k2 + r2 * 3.0 * k3)
    if D.size < 8:
        return dnum
    k4, k5, k6 = D[5:8]
    den = 1.0 + r2 * (k4 + r2 * (k5 + r2 * k6))
    dden = k4 + r2 * (2.0 * k5 + r2 * 3.0 * k6)
    return (dnum * den - num * dden) / (den * den)


def _equidistant_poly(t2: np.ndarray, D: np.ndarray) -> np.ndarray:
    k1, k2, k3, k4 = D
    return 1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))


def _as_points(
    points: np.ndarray, columns: int, name: str, allow_extra_columns: bool = False
) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == columns:
        arr = arr.reshape(1, columns)
    ok = arr.ndim == 2 and (
        arr.shape[1] >= columns if allow_extra_columns else arr.shape[1] == columns
    )
    if not ok:
        want = f"Nx{columns}" + (" or wider" if allow_extra_columns else "")
        raise ValueError(f"{name} must be an {want} array, got shape {arr.shape}")
    return arr
