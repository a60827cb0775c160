"""Metric depth from sparse LiDAR: projection, robust scale-and-shift fit, temporal filter.

DPT predicts relative inverse depth p, correct up to an unknown affine map. With LiDAR depths d at
some pixels we fit ``s * p + t = 1 / d`` and turn every pixel into metres. Residuals are measured
relative to the target, ``(s * p + t) * d - 1``, which is (to first order) the relative depth error,
so one threshold works at 2 m and at 80 m.

Everything is vectorised numpy; the fit never raises on bad data (it returns ``ok=False`` with a
reason) and raises ValueError only for malformed arguments.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import cv2
import numpy as np

from dpt_ros.geometry import CameraModel, as_transform, transform_points

METHODS = ("lstsq", "ransac")
REFINEMENTS = ("none", "huber", "tukey")
PRED_SEMANTICS = ("relative_inverse_depth", "metric_depth")

# Tuning constants of the M-estimators (95 % efficiency under Gaussian noise).
_HUBER_K = 1.345
_TUKEY_C = 4.685
_MAD_TO_SIGMA = 1.4826
_HYPOTHESES_PER_BATCH = 64
_LOCAL_OPTIMISATION_STEPS = 2


def _param(default, description: str, *, range=None, choices=None):  # noqa: A002
    meta = {"description": description}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class AlignConfig:
    """Every knob of LiDAR alignment; each field has metadata "description" (and "range" or
    "choices") so front ends can declare them as run-time parameters."""

    method: str = _param(
        "ransac", "scale-shift estimator: 'ransac' (robust) or 'lstsq' (MiDaS baseline)",
        choices=METHODS)
    refine: str = _param(
        "huber", "robust IRLS refinement on the inliers: 'none', 'huber' or 'tukey'",
        choices=REFINEMENTS)
    scale_only: bool = _param(
        False, "fit scale only (shift fixed at 0), for models that already output metres")
    residual_threshold: float = _param(
        0.1, "inlier threshold on the relative depth residual |(s*p+t)*d - 1|",
        range=(1e-4, 1.0))
    min_inliers: int = _param(
        20, "fewest inliers for a robust fit to be accepted", range=(2, 10_000_000))
    min_inlier_ratio: float = _param(
        0.3, "smallest inlier share of the valid LiDAR points for a robust fit to be accepted",
        range=(0.0, 1.0))
    max_iterations: int = _param(
        200, "upper bound on RANSAC hypotheses (the adaptive count usually stops earlier)",
        range=(1, 100_000))
    confidence: float = _param(
        0.999, "RANSAC confidence of having drawn one all-inlier minimal set",
        range=(0.5, 0.999999))
    sample_size: int = _param(
        2000, "LiDAR points (random subsample) used to score RANSAC hypotheses",
        range=(16, 10_000_000))
    refine_iterations: int = _param(
        4, "IRLS iterations of the robust refinement", range=(0, 100))
    seed: int = _param(
        0, "random seed of RANSAC sampling; -1 draws a fresh seed every fit",
        range=(-1, 2**31 - 1))
    min_depth: float = _param(
        0.1, "LiDAR and output depths below this (metres) are ignored / NaN", range=(0.0, 1e6))
    max_depth: float = _param(
        200.0, "LiDAR and output depths above this (metres) are ignored / NaN", range=(0.0, 1e6))
    zbuffer_window: int = _param(
        5, "odd pixel window of the LiDAR occlusion (z-buffer) test; 0 disables it",
        range=(0, 99))
    zbuffer_margin: float = _param(
        0.1, "a LiDAR point is occluded if farther than the window's nearest by this fraction",
        range=(0.0, 10.0))
    smoothing: float = _param(
        0.5, "share of the previous scale/shift kept when a new fit arrives (0 = no smoothing)",
        range=(0.0, 0.99))
    gate: float = _param(
        0.3, "largest relative change of depth between consecutive fits; larger jumps are "
        "rejected (0 disables the gate)", range=(0.0, 100.0))
    gate_max_rejections: int = _param(
        3, "consecutive rejected jumps after which the filter accepts the new fit",
        range=(0, 1000))
    hold_time: float = _param(
        1.0, "seconds the last good fit is reused when LiDAR is missing or the fit fails",
        range=(0.0, 3600.0))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise ValueError(f"align.{f.name} must be an int, got {value!r}")
            elif f.type in ("float", float):
                if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                    raise ValueError(f"align.{f.name} must be a number, got {value!r}")
                object.__setattr__(self, f.name, float(value))
            elif f.type in ("bool", bool):
                if not isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"align.{f.name} must be true or false, got {value!r}")
            if "choices" in f.metadata and value not in f.metadata["choices"]:
                raise ValueError(
                    f"align.{f.name} must be one of {f.metadata['choices']}, got {value!r}")
            if "range" in f.metadata:
                lo, hi = f.metadata["range"]
                if not (lo <= value <= hi):
                    raise ValueError(f"align.{f.name} must be in [{lo}, {hi}], got {value!r}")
        if self.min_depth >= self.max_depth:
            raise ValueError(
                f"align.min_depth ({self.min_depth}) must be below max_depth ({self.max_depth})")
        if self.zbuffer_window and self.zbuffer_window % 2 == 0:
            raise ValueError(f"align.zbuffer_window must be odd or 0, got {self.zbuffer_window}")

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> AlignConfig:
        """Build from a mapping (YAML, ROS parameters); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown align setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    def fit_kwargs(self) -> dict:
        """Keyword arguments of fit_scale_shift taken from this config."""
        names = ("refine", "scale_only", "residual_threshold", "min_inliers", "min_inlier_ratio",
                 "max_iterations", "confidence", "sample_size", "refine_iterations",
                 "min_depth", "max_depth")
        kwargs = {name: getattr(self, name) for name in names}
        kwargs["method"] = self.method
        kwargs["seed"] = None if self.seed < 0 else self.seed
        return kwargs


FIELD_DESCRIPTIONS: dict[str, str] = {
    f.name: f.metadata["description"] for f in fields(AlignConfig)
}


# ============================================================================ projection
@dataclass(frozen=True, eq=False)
class LidarProjection:
    """LiDAR points that land in the image and survive the occlusion test.

    All arrays have one entry per kept point; ``index`` points into the input point array.
    """

    uv: np.ndarray  # (N, 2) float64 sub-pixel coordinates
    rows: np.ndarray  # (N,) intp
    cols: np.ndarray  # (N,) intp
    depth: np.ndarray  # (N,) float64 z in the camera frame, metres
    index: np.ndarray  # (N,) intp
    image_size: tuple[int, int]  # (width, height)
    n_input: int
    n_in_view: int  # in front of the camera and inside the image, before the z-buffer

    def __len__(self) -> int:
        return int(self.depth.size)

    @property
    def n_occluded(self) -> int:
        return self.n_in_view - len(self)


def project_lidar(
    points: np.ndarray,
    T_cam_lidar: np.ndarray,
    camera: CameraModel,
    *,
    min_depth: float = 0.1,
    max_depth: float = np.inf,
    zbuffer_window: int = 5,
    zbuffer_margin: float = 0.1,
) -> LidarProjection:
    """Project LiDAR points (Nx3, or wider with x, y, z first) into the camera image.

    T_cam_lidar maps LiDAR-frame points into the camera optical frame. Points behind the camera,
    outside [min_depth, max_depth] or outside the image are dropped. The z-buffer then drops
    points farther than ``(1 + zbuffer_margin)`` times the nearest depth within a
    ``zbuffer_window`` square: the LiDAR sits elsewhere than the camera and sees background
    through gaps that, from the camera, are covered by a nearer object.
    """
    if not isinstance(camera, CameraModel):
        raise ValueError(f"camera must be a CameraModel, got {type(camera).__name__}")
    if zbuffer_window < 0 or (zbuffer_window and zbuffer_window % 2 == 0):
        raise ValueError(f"zbuffer_window must be odd or 0, got {zbuffer_window}")
    if zbuffer_margin < 0:
        raise ValueError(f"zbuffer_margin must be >= 0, got {zbuffer_margin}")
    if not min_depth < max_depth:
        raise ValueError(f"min_depth ({min_depth}) must be below max_depth ({max_depth})")
    T = as_transform(T_cam_lidar)
    pts_cam = transform_points(T, points)
    n_input = pts_cam.shape[0]
    uv, valid = camera.project(pts_cam, min_depth=max(min_depth, 1e-6))
    valid &= pts_cam[:, 2] <= max_depth
    index = np.flatnonzero(valid)
    uv = uv[index]
    depth = pts_cam[index, 2]
    cols = np.floor(uv[:, 0] + 0.5).astype(np.intp)
    rows = np.floor(uv[:, 1] + 0.5).astype(np.intp)
    n_in_view = int(index.size)

    if zbuffer_window and index.size:
        width, height = camera.width, camera.height
        flat = rows * width + cols
        depth32 = depth.astype(np.float32)
        nearest = np.full(width * height, np.inf, dtype=np.float32)
        np.minimum.at(nearest, flat, depth32)
        if zbuffer_window > 1:
            kernel = np.ones((zbuffer_window, zbuffer_window), dtype=np.uint8)
            nearest = cv2.erode(nearest.reshape(height, width), kernel).reshape(-1)
        keep = depth32 <= nearest[flat] * np.float32(1.0 + zbuffer_margin)
        uv, rows, cols, depth, index = uv[keep], rows[keep], cols[keep], depth[keep], index[keep]

    return LidarProjection(
        uv=uv, rows=rows, cols=cols, depth=depth, index=index,
        image_size=(camera.width, camera.height), n_input=n_input, n_in_view=n_in_view,
    )


def sample_prediction(pred: np.ndarray, projection: LidarProjection) -> np.ndarray:
    """Prediction values at the projected LiDAR pixels (nearest pixel), float64 (N,)."""
    pred = np.asarray(pred)
    width, height = projection.image_size
    if pred.shape != (height, width):
        raise ValueError(
            f"prediction is {pred.shape} but the LiDAR was projected into a {width}x{height} "
            "image; project with camera.scaled(pred width, pred height)"
        )
    return pred[projection.rows, projection.cols].astype(np.float64)


# ============================================================================ the fit
@dataclass(frozen=True, eq=False)
class ScaleShiftFit:
    """Result of fitting ``scale * p + shift = 1 / depth``.

    ``inliers`` is a bool mask over the input points. Residual statistics are relative depth
    residuals over the inliers. ``pred_range`` is the (min, max) prediction over the inliers:
    the range where the fit is supported by data.
    """

    scale: float
    shift: float
    inliers: np.ndarray
    ok: bool
    reason: str
    n_points: int = 0  # valid input points (finite, in the depth range)
    n_inliers: int = 0
    residual_rms: float = math.nan
    residual_mean_abs: float = math.nan
    pred_range: tuple[float, float] = (math.nan, math.nan)
    method: str = "ransac"
    pred_semantics: str = "relative_inverse_depth"
    iterations: int = 0

    @property
    def inlier_ratio(self) -> float:
        return self.n_inliers / self.n_points if self.n_points else 0.0


def fit_scale_shift(
    pred: np.ndarray,
    target_depth: np.ndarray,
    method: str = "ransac",
    *,
    refine: str = "huber",
    scale_only: bool = False,
    weights: np.ndarray | None = None,
    residual_threshold: float = 0.1,
    min_inliers: int = 20,
    min_inlier_ratio: float = 0.3,
    max_iterations: int = 200,
    confidence: float = 0.999,
    sample_size: int = 2000,
    refine_iterations: int = 4,
    seed: int | None | np.random.Generator = 0,
    min_depth: float = 0.1,
    max_depth: float = np.inf,
    pred_semantics: str = "relative_inverse_depth",
) -> ScaleShiftFit:
    """Fit ``scale * p + shift = 1 / target_depth`` (p = pred, or 1 / pred for metric models).

    method "lstsq": weighted least squares in inverse depth over all valid points (the MiDaS
    evaluation baseline); "ransac": 2-point (1-point when scale_only) minimal sets scored with
    the truncated-quadratic MSAC cost on a subsample of ``sample_size`` points, adaptive
    iteration count, then a least-squares pass on all inliers. ``refine`` adds IRLS with Huber or
    Tukey weights on the inliers. Robust fits (ransac, or any refine) must reach
    ``min_inliers`` and ``min_inlier_ratio``; every fit needs a positive, finite scale.

    Points with non-finite values, a depth outside (min_depth, max_depth] or a non-positive
    weight are ignored. Degenerate data gives ``ok=False`` and a reason, never an exception.
    """
    p_in, d_in, w_in = _check_fit_arguments(
        pred, target_depth, weights, method, refine, pred_semantics, residual_threshold,
        min_inliers, min_inlier_ratio, max_iterations, confidence, sample_size,
        refine_iterations, min_depth, max_depth)
    robust = method == "ransac" or refine != "none"
    meta = {"method": method if refine == "none" else f"{method}+{refine}",
            "pred_semantics": pred_semantics}
    inliers = np.zeros(p_in.size, dtype=bool)
    try:
        with np.errstate(all="ignore"):
            return _fit(p_in, d_in, w_in, inliers, method, refine, robust, scale_only,
                        residual_threshold, min_inliers, min_inlier_ratio, max_iterations,
                        confidence, sample_size, refine_iterations, seed, min_depth, max_depth,
                        pred_semantics, meta)
    except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
        # Bad arguments were rejected above, so whatever surfaces here is numerical.
        return ScaleShiftFit(math.nan, math.nan, inliers, False, f"numerical failure: {exc}",
                             **meta)


def _check_fit_arguments(pred, target_depth, weights, method, refine, pred_semantics,
                         residual_threshold, min_inliers, min_inlier_ratio, max_iterations,
                         confidence, sample_size, refine_iterations, min_depth, max_depth):
    p = _as_float_vector(pred, "pred")
    d = _as_float_vector(target_depth, "target_depth")
    if p.shape != d.shape:
        raise ValueError(f"pred and target_depth differ in length: {p.size} vs {d.size}")
    w = None
    if weights is not None:
        w = _as_float_vector(weights, "weights")
        if w.shape != p.shape:
            raise ValueError(f"weights has {w.size} entries for {p.size} points")
    if method not in METHODS:
        raise ValueError(f"unknown fit method {method!r}; expected one of {METHODS}")
    if refine not in REFINEMENTS:
        raise ValueError(f"unknown refinement {refine!r}; expected one of {REFINEMENTS}")
    if pred_semantics not in PRED_SEMANTICS:
        raise ValueError(f"unknown pred_semantics {pred_semantics!r}; expected {PRED_SEMANTICS}")
    checks = (
        ("residual_threshold", residual_threshold, 0.0 < residual_threshold),
        ("min_inliers", min_inliers, min_inliers >= 1),
        ("min_inlier_ratio", min_inlier_ratio, 0.0 <= min_inlier_ratio <= 1.0),
        ("max_iterations", max_iterations, max_iterations >= 1),
        ("confidence", confidence, 0.0 < confidence < 1.0),
        ("sample_size", sample_size, sample_size >= 2),
        ("refine_iterations", refine_iterations, refine_iterations >= 0),
        ("min_depth", min_depth, min_depth >= 0.0),
        ("max_depth", max_depth, max_depth > min_depth),
    )
    for name, value, good in checks:
        if not good:
            raise ValueError(f"fit_scale_shift: bad {name}={value!r}")
    return p, d, w


def _as_float_vector(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per LiDAR point), got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _fit(p_in, d_in, w_in, inliers, method, refine, robust, scale_only, threshold, min_inliers,
         min_inlier_ratio, max_iterations, confidence, sample_size, refine_iterations, seed,
         min_depth, max_depth, pred_semantics, meta) -> ScaleShiftFit:
    def fail(reason: str, n_points: int = 0, scale=math.nan, shift=math.nan, **extra):
        return ScaleShiftFit(float(scale), float(shift), inliers, False, reason,
                             n_points=n_points, **meta, **extra)

    if p_in.size == 0:
        return fail("no LiDAR points")
    if pred_semantics == "metric_depth":
        p_in = np.where(p_in > 0, 1.0 / p_in, np.nan)
    valid = np.isfinite(p_in) & np.isfinite(d_in) & (d_in > min_depth) & (d_in <= max_depth)
    if w_in is not None:
        valid &= np.isfinite(w_in) & (w_in > 0)
    index = np.flatnonzero(valid)
    n = int(index.size)
    needed = max(2, min_inliers) if robust else 2
    if n < needed:
        return fail(
            f"too few valid LiDAR points: {n} of {p_in.size} (need {needed}; points need finite "
            f"values and a depth in ({min_depth}, {max_depth}] m)", n)
    p = p_in[index]
    d = d_in[index]
    w = None if w_in is None else w_in[index]
    q = 1.0 / d

    p_scale = float(np.max(np.abs(p)))
    if scale_only:
        if p_scale <= 0:
            return fail("prediction is zero at every LiDAR point; scale is unobservable", n)
    else:
        if float(np.ptp(p)) <= 1e-9 * max(p_scale, 1e-30):
            return fail("prediction is constant at the LiDAR points; scale is unobservable", n)
        if float(np.ptp(q)) <= 1e-9 * float(np.max(q)):
            return fail("all LiDAR points are at one depth; scale and shift are not separable", n)

    iterations = 0
    if method == "lstsq":
        scale, shift = _weighted_affine(p, q, w, scale_only)
    else:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        found = _ransac(p, q, d, rng, scale_only, threshold, max_iterations, confidence,
                        sample_size)
        if found is None:
            return fail("RANSAC found no hypothesis with a positive scale", n)
        scale, shift, iterations = found
        # Local optimisation: least squares on the consensus set, then re-select it.
        for _ in range(_LOCAL_OPTIMISATION_STEPS):
            mask = _relative_residual(p, d, scale, shift) < threshold
            if np.count_nonzero(mask) < 2:
                break
            rel_w = d[mask] ** 2 if w is None else w[mask] * d[mask] ** 2
            scale, shift = _weighted_affine(p[mask], q[mask], rel_w, scale_only)

    if refine != "none" and refine_iterations > 0 and math.isfinite(scale):
        scale, shift = _irls(p, d, q, w, scale, shift, refine, refine_iterations, threshold,
                             scale_only)

    if not (math.isfinite(scale) and math.isfinite(shift)):
        return fail("fit is not finite", n)
    residual = _relative_residual(p, d, scale, shift)
    mask = residual < threshold
    n_inliers = int(np.count_nonzero(mask))
    inliers[index[mask]] = True
    stats = {"n_inliers": n_inliers, "iterations": iterations}
    if n_inliers:
        r_in = residual[mask]
        stats.update(
            residual_rms=float(np.sqrt(np.mean(r_in * r_in))),
            residual_mean_abs=float(np.mean(r_in)),
            pred_range=(float(np.min(p[mask])), float(np.max(p[mask]))),
        )
    if scale <= 0:
        return fail(f"non-positive scale {scale:.4g}: prediction and LiDAR disagree", n,
                    scale, shift, **stats)
    if robust:
        if n_inliers < min_inliers:
            return fail(f"only {n_inliers} inliers (need {min_inliers})", n, scale, shift,
                        **stats)
        if n_inliers < min_inlier_ratio * n:
            return fail(f"inlier ratio {n_inliers / n:.2f} below {min_inlier_ratio:.2f}", n,
                        scale, shift, **stats)
    return ScaleShiftFit(float(scale), float(shift), inliers, True, "ok", n_points=n, **meta,
                         **stats)


def _relative_residual(p, d, scale, shift) -> np.ndarray:
    """|(s * p + t) * d - 1|: relative error of the fitted inverse depth (~ of depth)."""
    return np.abs((scale * p + shift) * d - 1.0)


def _weighted_affine(p, q, w, scale_only) -> tuple[float, float]:
    """Weighted least squares for q = s * p + t (t = 0 when scale_only)."""
    if w is None:
        w_sum = float(p.size)
        if scale_only:
            return float(np.dot(p, q) / np.dot(p, p)), 0.0
        p_mean, q_mean = float(p.sum()) / w_sum, float(q.sum()) / w_sum
        pc = p - p_mean
        scale = float(np.dot(pc, q - q_mean) / np.dot(pc, pc))
        return scale, q_mean - scale * p_mean
    if scale_only:
        wp = w * p
        return float(np.dot(wp, q) / np.dot(wp, p)), 0.0
    w_sum = float(w.sum())
    p_mean, q_mean = float(np.dot(w, p)) / w_sum, float(np.dot(w, q)) / w_sum
    pc = p - p_mean
    wpc = w * pc
    scale = float(np.dot(wpc, q - q_mean) / np.dot(wpc, pc))
    return scale, q_mean - scale * p_mean


def _ransac(p, q, d, rng, scale_only, threshold, max_iterations, confidence, sample_size):
    """Best (scale, shift, hypotheses drawn) by MSAC score on a subsample, or None."""
    n = p.size
    if n > sample_size:
        pick = rng.integers(0, n, sample_size)
        ps, qs, ds = p[pick], q[pick], d[pick]
    else:
        ps, qs, ds = p, q, d
    m = ps.size
    minimal = 1 if scale_only else 2
    p_tolerance = 1e-9 * float(np.max(np.abs(ps)))
    thr2 = threshold * threshold
    best_cost, best, drawn = np.inf, None, 0
    needed = max_iterations
    while drawn < min(needed, max_iterations):
        batch = min(_HYPOTHESES_PER_BATCH, max_iterations - drawn)
        i = rng.integers(0, m, batch)
        if scale_only:
            s = qs[i] / ps[i]
            t = np.zeros(batch)
            usable = np.abs(ps[i]) > p_tolerance
        else:
            j = rng.integers(0, m, batch)
            dp = ps[i] - ps[j]
            usable = np.abs(dp) > p_tolerance
            s = (qs[i] - qs[j]) / np.where(usable, dp, 1.0)
            t = qs[i] - s * ps[i]
        drawn += batch
        usable &= np.isfinite(s) & np.isfinite(t) & (s > 0)
        if not usable.any():
            continue
        s, t = s[usable], t[usable]
        r = (s[:, None] * ps[None, :] + t[:, None]) * ds[None, :] - 1.0
        r *= r
        cost = np.minimum(r, thr2).sum(axis=1)
        k = int(np.argmin(cost))
        if cost[k] < best_cost:
            best_cost = float(cost[k])
            best = (float(s[k]), float(t[k]))
            inlier_share = np.count_nonzero(r[k] < thr2) / m
            needed = _ransac_iterations(inlier_share, minimal, confidence, max_iterations)
    if best is None:
        return None
    return best[0], best[1], drawn


def _ransac_iterations(inlier_share: float, minimal: int, confidence: float, cap: int) -> int:
    all_inlier = inlier_share**minimal
    if all_inlier >= 1.0:
        return 1
    if all_inlier <= 0.0:
        return cap
    return min(cap, math.ceil(math.log(1.0 - confidence) / math.log(1.0 - all_inlier)))


def _irls(p, d, q, w, scale, shift, refine, iterations, threshold, scale_only):
    """Iteratively reweighted least squares on the relative residual, over the inliers."""
    mask = _relative_residual(p, d, scale, shift) < threshold
    if np.count_nonzero(mask) < 2:
        return scale, shift
    p, d, q = p[mask], d[mask], q[mask]
    base = d * d if w is None else w[mask] * d * d
    for _ in range(iterations):
        r = np.abs((scale * p + shift) * d - 1.0)
        # Robust spread from a strided subset: a full median costs more than the rest.
        stride = max(1, r.size // 2000)
        sigma = _MAD_TO_SIGMA * float(np.median(r[::stride]))
        if refine == "huber":
            c = min(max(_HUBER_K * sigma, 1e-9), threshold)
            weight = np.minimum(1.0, c / np.maximum(r, 1e-300))
        else:
            c = min(max(_TUKEY_C * sigma, 1e-9), threshold)
            u = np.minimum(r / c, 1.0)
            weight = (1.0 - u * u) ** 2
        weight *= base
        if np.count_nonzero(weight) < 2:
            break
        new_scale, new_shift = _weighted_affine(p, q, weight, scale_only)
        if not (math.isfinite(new_scale) and math.isfinite(new_shift)):
            break
        converged = abs(new_scale - scale) <= 1e-10 * abs(scale) and abs(
            new_shift - shift) <= 1e-10 * max(abs(shift), abs(scale))
        scale, shift = new_scale, new_shift
        if converged:
            break
    return scale, shift


# ============================================================================ metric depth
def affine_to_depth(
    pred: np.ndarray,
    scale: float,
    shift: float,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
    pred_semantics: str = "relative_inverse_depth",
) -> np.ndarray:
    """Depth 1 / (scale * p + shift) as float32; NaN where that inverse depth is not positive,
    the depth is outside [min_depth, max_depth] or the prediction is not finite."""
    if pred_semantics not in PRED_SEMANTICS:
        raise ValueError(f"unknown pred_semantics {pred_semantics!r}; expected {PRED_SEMANTICS}")
    p = np.asarray(pred, dtype=np.float32)
    with np.errstate(all="ignore"):
        if pred_semantics == "metric_depth":
            p = np.where(p > 0, np.float32(1.0) / p, np.float32(np.nan))
        inverse = np.float32(scale) * p + np.float32(shift)
        depth = np.float32(1.0) / inverse
        good = (inverse > 0) & (depth >= min_depth) & (depth <= max_depth)
    return np.where(good, depth, np.float32(np.nan))


def to_metric(
    pred: np.ndarray,
    fit: ScaleShiftFit,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
) -> np.ndarray:
    """Metric depth (float32 metres, NaN where unknown) from a prediction and an ok fit."""
    if not isinstance(fit, ScaleShiftFit):
        raise ValueError(f"fit must be a ScaleShiftFit, got {type(fit).__name__}")
    if not fit.ok:
        raise ValueError(f"cannot convert to metres with a failed fit: {fit.reason}")
    return affine_to_depth(pred, fit.scale, fit.shift, min_depth, max_depth, fit.pred_semantics)


# ============================================================================ temporal filter
class ScaleShiftFilter:
    """Temporal filter over per-frame fits.

    A good fit is blended into the running (scale, shift); a fit whose implied depth moves more
    than ``gate`` (relative) from the current one is rejected, unless ``gate_max_rejections``
    such fits came in a row (then the scene really changed and the new fit is taken). When the
    fit fails or LiDAR is missing the last good fit is held for ``hold_time`` seconds, after
    which the filter reports no scale (None) rather than a stale one.

    ``state`` is "empty", "tracking", "holding" or "expired"; ``reason`` says why.
    """

    def __init__(
        self,
        smoothing: float = 0.5,
        gate: float = 0.3,
        gate_max_rejections: int = 3,
        hold_time: float = 1.0,
    ) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if gate < 0:
            raise ValueError(f"gate must be >= 0 (0 disables it), got {gate}")
        if gate_max_rejections < 0:
            raise ValueError(f"gate_max_rejections must be >= 0, got {gate_max_rejections}")
        if hold_time < 0:
            raise ValueError(f"hold_time must be >= 0 seconds, got {hold_time}")
        self.smoothing = float(smoothing)
        self.gate = float(gate)
        self.gate_max_rejections = int(gate_max_rejections)
        self.hold_time = float(hold_time)
        self.reset()

    @classmethod
    def from_config(cls, config: AlignConfig) -> ScaleShiftFilter:
        return cls(config.smoothing, config.gate, config.gate_max_rejections, config.hold_time)

    def reset(self) -> None:
        self._current: ScaleShiftFit | None = None
        self._last_good_stamp: float | None = None
        self._last_stamp: float | None = None
        self._rejections = 0
        self.state = "empty"
        self.reason = "no fit yet"

    @property
    def current(self) -> ScaleShiftFit | None:
        """The fit in use, or None when there is no scale."""
        return self._current

    @property
    def age_s(self) -> float:
        """Seconds since the last accepted fit (inf when none)."""
        if self._last_good_stamp is None or self._last_stamp is None:
            return math.inf
        return self._last_stamp - self._last_good_stamp

    def update(self, fit: ScaleShiftFit | None, stamp_s: float) -> ScaleShiftFit | None:
        """Feed this frame's fit (None when there was no LiDAR); returns the fit to use or None."""
        stamp = float(stamp_s)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp_s must be finite, got {stamp_s!r}")
        if fit is not None and not isinstance(fit, ScaleShiftFit):
            raise ValueError(f"fit must be a ScaleShiftFit or None, got {type(fit).__name__}")
        if self._last_stamp is not None and stamp < self._last_stamp:
            # A bag restarted or simulated time was reset: the old scale is meaningless now.
            self.reset()
            restarted = " (time went backwards: filter reset)"
        else:
            restarted = ""
        self._last_stamp = stamp

        if fit is not None and fit.ok:
            if self._current is None:
                return self._accept(fit, stamp, "initialised from a new fit" + restarted)
            jump = _relative_jump(self._current, fit)
            if self.gate > 0 and jump > self.gate:
                self._rejections += 1
                if self._rejections > self.gate_max_rejections:
                    return self._accept(
                        fit, stamp, f"re-initialised after {self._rejections} rejected jumps")
                why = f"rejected a jump of {jump:.0%} (gate {self.gate:.0%})"
            else:
                a = self.smoothing
                blended = dataclasses.replace(
                    fit,
                    scale=a * self._current.scale + (1 - a) * fit.scale,
                    shift=a * self._current.shift + (1 - a) * fit.shift,
                )
                return self._accept(blended, stamp, "tracking")
        elif fit is None:
            why = "no LiDAR fit this frame"
        else:
            why = f"fit failed: {fit.reason}"
        return self._hold(stamp, why + restarted)

    def _accept(self, fit: ScaleShiftFit, stamp: float, reason: str) -> ScaleShiftFit:
        self._current = fit
        self._last_good_stamp = stamp
        self._rejections = 0
        self.state = "tracking"
        self.reason = reason
        return fit

    def _hold(self, stamp: float, why: str) -> ScaleShiftFit | None:
        if self._current is None:
            self.state = "empty"
            self.reason = f"{why}; no scale yet"
            return None
        age = stamp - self._last_good_stamp
        if age <= self.hold_time:
            self.state = "holding"
            self.reason = f"{why}; holding the fit from {age:.2f} s ago"
            return self._current
        self._current = None
        self.state = "expired"
        self.reason = f"{why}; last good fit is {age:.2f} s old (hold {self.hold_time} s)"
        return None


def _relative_jump(old: ScaleShiftFit, new: ScaleShiftFit) -> float:
    """Largest relative change of inverse depth between two fits over the new fit's support."""
    lo, hi = new.pred_range
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = old.pred_range
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return abs(new.scale / old.scale - 1.0) if old.scale else math.inf
    p = np.array([lo, hi])
    before = old.scale * p + old.shift
    after = new.scale * p + new.shift
    if np.any(before <= 0):
        return math.inf
    return float(np.max(np.abs(after - before) / before))


# ============================================================================ one call per frame
@dataclass(frozen=True, eq=False)
class Alignment:
    """What MetricAligner.align produced for one frame."""

    metric_depth: np.ndarray | None  # HxW float32 metres, NaN where unknown; None without scale
    fit: ScaleShiftFit | None  # the filtered fit applied (None: no scale)
    raw_fit: ScaleShiftFit | None  # this frame's own fit (None: no LiDAR this frame)
    projection: LidarProjection | None
    filter_state: str
    filter_reason: str
    timings: dict[str, float]  # stage -> milliseconds


class MetricAligner:
    """Projection, fit, temporal filter and conversion in one stateful object per camera.

    The camera is rescaled to the prediction's size when they differ.
    """

    def __init__(self, config: AlignConfig | None = None) -> None:
        self.config = config or AlignConfig()
        self.filter = ScaleShiftFilter.from_config(self.config)
        # The last (camera, camera rescaled to the prediction) pair: cameras rarely change.
        self._scaled: tuple[CameraModel, CameraModel] | None = None

    def reset(self) -> None:
        self.filter.reset()

    def align(
        self,
        pred: np.ndarray,
        stamp_s: float,
        camera: CameraModel | None = None,
        lidar_points: np.ndarray | None = None,
        T_cam_lidar: np.ndarray | None = None,
        pred_semantics: str = "relative_inverse_depth",
    ) -> Alignment:
        """Align one prediction (HxW); without LiDAR (or camera) the filter holds or expires."""
        pred = np.asarray(pred)
        if pred.ndim != 2:
            raise ValueError(f"pred must be a 2-D (H, W) array, got shape {pred.shape}")
        cfg = self.config
        timings: dict[str, float] = {}
        projection, raw = None, None
        if lidar_points is not None and camera is not None:
            if T_cam_lidar is None:
                raise ValueError("lidar_points given without T_cam_lidar")
            t0 = time.perf_counter()
            cam = self._camera_for(camera, pred.shape[1], pred.shape[0])
            projection = project_lidar(
                lidar_points, T_cam_lidar, cam, min_depth=cfg.min_depth,
                max_depth=cfg.max_depth, zbuffer_window=cfg.zbuffer_window,
                zbuffer_margin=cfg.zbuffer_margin)
            t1 = time.perf_counter()
            raw = fit_scale_shift(sample_prediction(pred, projection), projection.depth,
                                  pred_semantics=pred_semantics, **cfg.fit_kwargs())
            t2 = time.perf_counter()
            timings["project_ms"] = (t1 - t0) * 1e3
            timings["fit_ms"] = (t2 - t1) * 1e3
        fit = self.filter.update(raw, stamp_s)
        metric = None
        if fit is not None:
            t3 = time.perf_counter()
            metric = affine_to_depth(pred, fit.scale, fit.shift, cfg.min_depth, cfg.max_depth,
                                     fit.pred_semantics)
            timings["to_metric_ms"] = (time.perf_counter() - t3) * 1e3
        return Alignment(metric, fit, raw, projection, self.filter.state, self.filter.reason,
                         timings)

    def _camera_for(self, camera: CameraModel, width: int, height: int) -> CameraModel:
        if camera.size == (width, height):
            return camera
        cached = self._scaled
        if cached is None or cached[0] is not camera or cached[1].size != (width, height):
            cached = (camera, camera.scaled(width, height))
            self._scaled = cached
        return cached[1]
