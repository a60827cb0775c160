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

from dpt_ros.geometry import CameraModel, as_transform, point_columns, transform_row

METHODS = ("lstsq", "ransac")
REFINEMENTS = ("none", "huber", "tukey")
PRED_SEMANTICS = ("relative_inverse_depth", "metric_depth")

# Tuning constants of the M-estimators (95 % efficiency under Gaussian noise).
_HUBER_K = 1.345
_TUKEY_C = 4.685
_MAD_TO_SIGMA = 1.4826
_HYPOTHESES_PER_BATCH = 32
_LOCAL_OPTIMISATION_STEPS = 2
# IRLS iterations before the last run on about this many points (the last uses all inliers).
_IRLS_SUBSET = 8192
# LiDAR depths (strided subset) sorted to find the best flat-scene model; its share of points
# is known to about 1 %, far below the margin of min_gain_over_flat.
_FLAT_SUBSET = 4096


def _param(default, description: str, *, bounds=None, choices=None):
    meta = {"description": description}
    if bounds is not None:
        meta["range"] = bounds
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class AlignConfig:
    """Every knob of LiDAR alignment; each field has metadata "description" (and "range" or
    "choices") so front ends can declare them as run-time parameters."""

    method: str = _param(
        "ransac",
        "scale-shift estimator: 'ransac' (robust) or 'lstsq' (MiDaS baseline)",
        choices=METHODS,
    )
    refine: str = _param(
        "huber",
        "robust IRLS refinement on the inliers: 'none', 'huber' or 'tukey'",
        choices=REFINEMENTS,
    )
    scale_only: bool = _param(
        False, "fit scale only (shift fixed at 0), for models that already output metres"
    )
    residual_threshold: float = _param(
        0.1, "inlier threshold on the relative depth residual |(s*p+t)*d - 1|", bounds=(1e-4, 1.0)
    )
    min_inliers: int = _param(
        20, "fewest inliers for a robust fit to be accepted", bounds=(2, 10_000_000)
    )
    min_inlier_ratio: float = _param(
        0.3,
        "smallest inlier share of the valid LiDAR points for a robust fit to be accepted",
        bounds=(0.0, 1.0),
    )
    min_gain_over_flat: float = _param(
        0.1,
        "share of the LiDAR points that the best single depth leaves unexplained which the fit "
        "must explain; rejects flat fits of predictions that carry no depth (0 disables)",
        bounds=(0.0, 1.0),
    )
    max_iterations: int = _param(
        200,
        "upper bound on RANSAC hypotheses (the adaptive count usually stops earlier)",
        bounds=(1, 100_000),
    )
    confidence: float = _param(
        0.999,
        "RANSAC confidence of having drawn one all-inlier minimal set",
        bounds=(0.5, 0.999999),
    )
    sample_size: int = _param(
        2000,
        "LiDAR points (random subsample) used to score RANSAC hypotheses",
        bounds=(16, 10_000_000),
    )
    refine_iterations: int = _param(3, "IRLS iterations of the robust refinement", bounds=(0, 100))
    seed: int = _param(
        0, "random seed of RANSAC sampling; -1 draws a fresh seed every fit", bounds=(-1, 2**31 - 1)
    )
    min_depth: float = _param(
        0.1,
        "LiDAR depths below this (metres) are ignored; output depths below it are -Inf (REP 117)",
        bounds=(0.0, 1e6),
    )
    max_depth: float = _param(
        200.0,
        "LiDAR depths above this (metres) are ignored; output depths above it are +Inf (REP 117)",
        bounds=(0.0, 1e6),
    )
    zbuffer_window: int = _param(
        5, "odd pixel window of the LiDAR occlusion (z-buffer) test; 0 disables it", bounds=(0, 99)
    )
    zbuffer_margin: float = _param(
        0.1,
        "a LiDAR point is occluded if farther than the window's nearest by this fraction",
        bounds=(0.0, 10.0),
    )
    smoothing: float = _param(
        0.5,
        "share of the previous scale/shift kept when a new fit arrives (0 = no smoothing)",
        bounds=(0.0, 0.99),
    )
    gate: float = _param(
        0.3,
        "largest relative change of depth between consecutive fits; larger jumps are "
        "rejected (0 disables the gate)",
        bounds=(0.0, 100.0),
    )
    gate_max_rejections: int = _param(
        3, "consecutive rejected jumps after which the filter accepts the new fit", bounds=(0, 1000)
    )
    hold_time: float = _param(
        1.0,
        "seconds the last good fit is reused when LiDAR is missing or the fit fails",
        bounds=(0.0, 3600.0),
    )

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
            elif f.type in ("bool", bool) and not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"align.{f.name} must be true or false, got {value!r}")
            if "choices" in f.metadata and value not in f.metadata["choices"]:
                raise ValueError(
                    f"align.{f.name} must be one of {f.metadata['choices']}, got {value!r}"
                )
            if "range" in f.metadata:
                lo, hi = f.metadata["range"]
                if not (lo <= value <= hi):
                    raise ValueError(f"align.{f.name} must be in [{lo}, {hi}], got {value!r}")
        if self.min_depth >= self.max_depth:
            raise ValueError(
                f"align.min_depth ({self.min_depth}) must be below max_depth ({self.max_depth})"
            )
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
        names = (
            "refine",
            "scale_only",
            "residual_threshold",
            "min_inliers",
            "min_inlier_ratio",
            "min_gain_over_flat",
            "max_iterations",
            "confidence",
            "sample_size",
            "refine_iterations",
            "min_depth",
            "max_depth",
        )
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
    x, y, z = point_columns(points)
    n_input = int(x.size)
    # Depth first: most of a 360-degree scan is behind the camera and needs nothing more.
    z_cam = transform_row(T, 2, x, y, z)
    ahead = np.flatnonzero((z_cam > max(min_depth, 1e-6)) & (z_cam <= max_depth))
    xa, ya, za = x.take(ahead), y.take(ahead), z.take(ahead)
    pts_cam = np.empty((ahead.size, 3))
    transform_row(T, 0, xa, ya, za, out=pts_cam[:, 0])
    transform_row(T, 1, xa, ya, za, out=pts_cam[:, 1])
    pts_cam[:, 2] = z_cam.take(ahead)
    uv, valid = camera.project(pts_cam, min_depth=max(min_depth, 1e-6))
    keep = np.flatnonzero(valid)
    index = ahead.take(keep)
    uv = uv.take(keep, axis=0)
    depth = pts_cam[:, 2].take(keep)
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
        uv=uv,
        rows=rows,
        cols=cols,
        depth=depth,
        index=index,
        image_size=(camera.width, camera.height),
        n_input=n_input,
        n_in_view=n_in_view,
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
    the range where the fit is supported by data. ``flat_inlier_ratio`` is the share of the
    valid points that the best single depth explains within the same threshold (NaN when the
    check against a flat scene did not run).
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
    flat_inlier_ratio: float = math.nan

    @property
    def inlier_ratio(self) -> float:
        return self.n_inliers / self.n_points if self.n_points else 0.0

    @property
    def gain_over_flat(self) -> float:
        """Share of the points the best single depth leaves unexplained that the fit explains:
        an R-squared against a flat scene, counting inliers instead of summing squares."""
        return _gain_over_flat(self.inlier_ratio, self.flat_inlier_ratio)


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
    min_gain_over_flat: float = 0.1,
    max_iterations: int = 200,
    confidence: float = 0.999,
    sample_size: int = 2000,
    refine_iterations: int = 3,
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

    Every fit must also beat a flat scene: of the valid points that no single depth explains
    within ``residual_threshold``, it must explain at least ``min_gain_over_flat``. A
    prediction without depth information (noise, a constant) otherwise passes with a near-zero
    scale whenever enough LiDAR points share one depth (ground rings, a wall), and every pixel
    gets that depth. The same holds for ``scale_only``: a flat prediction scaled to the most
    common LiDAR depth explains no more than that depth does. LiDAR that sees a single depth
    (within the threshold) cannot confirm any prediction, so such fits fail too.

    Points with non-finite values, a depth outside (min_depth, max_depth] or a non-positive
    weight are ignored. Degenerate data gives ``ok=False`` and a reason, never an exception.
    """
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
        ("residual_threshold", residual_threshold, residual_threshold > 0.0),
        ("min_inliers", min_inliers, min_inliers >= 1),
        ("min_inlier_ratio", min_inlier_ratio, 0.0 <= min_inlier_ratio <= 1.0),
        ("min_gain_over_flat", min_gain_over_flat, 0.0 <= min_gain_over_flat <= 1.0),
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
    robust = method == "ransac" or refine != "none"
    meta = {
        "method": method if refine == "none" else f"{method}+{refine}",
        "pred_semantics": pred_semantics,
    }
    try:
        with np.errstate(all="ignore"):
            return _fit(
                p,
                d,
                w,
                method=method,
                refine=refine,
                robust=robust,
                scale_only=scale_only,
                threshold=residual_threshold,
                min_inliers=min_inliers,
                min_inlier_ratio=min_inlier_ratio,
                min_gain_over_flat=min_gain_over_flat,
                max_iterations=max_iterations,
                confidence=confidence,
                sample_size=sample_size,
                refine_iterations=refine_iterations,
                seed=seed,
                min_depth=min_depth,
                max_depth=max_depth,
                pred_semantics=pred_semantics,
                meta=meta,
            )
    except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
        # Bad arguments were rejected above, so whatever surfaces here is numerical.
        return ScaleShiftFit(
            math.nan,
            math.nan,
            np.zeros(p.size, dtype=bool),
            False,
            f"numerical failure: {exc}",
            **meta,
        )


def _as_float_vector(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per LiDAR point), got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _fit(
    p_in,
    d_in,
    w_in,
    *,
    method,
    refine,
    robust,
    scale_only,
    threshold,
    min_inliers,
    min_inlier_ratio,
    min_gain_over_flat,
    max_iterations,
    confidence,
    sample_size,
    refine_iterations,
    seed,
    min_depth,
    max_depth,
    pred_semantics,
    meta,
) -> ScaleShiftFit:
    n_total = p_in.size

    def fail(
        reason: str, n_points: int = 0, scale=math.nan, shift=math.nan, inliers=None, **extra
    ) -> ScaleShiftFit:
        mask = np.zeros(n_total, dtype=bool) if inliers is None else inliers
        return ScaleShiftFit(
            float(scale), float(shift), mask, False, reason, n_points=n_points, **meta, **extra
        )

    if n_total == 0:
        return fail("no LiDAR points")
    if pred_semantics == "metric_depth":
        p_in = np.where(p_in > 0, 1.0 / p_in, np.nan)
    valid = np.isfinite(p_in)
    valid &= d_in > min_depth
    valid &= (d_in <= max_depth) if math.isfinite(max_depth) else (d_in < math.inf)
    if w_in is not None:
        valid &= (w_in > 0) & (w_in < math.inf)
    # The common case (all points usable) skips three copies of every array.
    index = None if valid.all() else np.flatnonzero(valid)
    if index is None:
        p, d, w = p_in, d_in, w_in
    else:
        p, d = p_in.take(index), d_in.take(index)
        w = None if w_in is None else w_in.take(index)
    n = int(p.size)
    needed = max(2, min_inliers) if robust else 2
    if n < needed:
        return fail(
            f"too few valid LiDAR points: {n} of {n_total} (need {needed}; points need finite "
            f"values and a depth in ({min_depth}, {max_depth}] m)",
            n,
        )

    p_lo, p_hi = float(p.min()), float(p.max())
    d_lo, d_hi = float(d.min()), float(d.max())
    p_scale = max(abs(p_lo), abs(p_hi))
    if scale_only:
        if p_scale <= 0:
            return fail("prediction is zero at every LiDAR point; scale is unobservable", n)
    else:
        if p_hi - p_lo <= 1e-9 * p_scale:
            return fail("prediction is constant at the LiDAR points; scale is unobservable", n)
        if d_hi - d_lo <= 1e-9 * d_hi:
            return fail("all LiDAR points are at one depth; scale and shift are not separable", n)

    iterations = 0
    support = (p_lo, p_hi)
    if method == "lstsq":
        scale, shift = _solve_inverse_depth(p, d, w, scale_only)
    else:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        found = _ransac(p, d, rng, scale_only, threshold, max_iterations, confidence, sample_size)
        if found is None:
            return fail("RANSAC found no hypothesis with a positive scale", n)
        scale, shift, iterations, support = found

    use_irls = refine != "none" and refine_iterations > 0
    if use_irls or method == "ransac":
        # IRLS, or for plain RANSAC a few least-squares passes ("local optimisation"), on the
        # consensus set of the current estimate.
        for _ in range(1 if use_irls else _LOCAL_OPTIMISATION_STEPS):
            # flatnonzero + take: boolean indexing of a random mask is several times slower.
            take = np.flatnonzero(_relative_residual(p, d, scale, shift) < threshold)
            if take.size < 2 or not math.isfinite(scale):
                break
            p_m, d_m = p.take(take), d.take(take)
            w_m = None if w is None else w.take(take)
            if use_irls:
                scale, shift = _irls(
                    p_m,
                    d_m,
                    p_m * d_m,
                    w_m,
                    scale,
                    shift,
                    refine,
                    refine_iterations,
                    threshold,
                    scale_only,
                )
            else:
                scale, shift = _solve_relative(d_m, p_m * d_m, w_m, scale_only)

    if not (math.isfinite(scale) and math.isfinite(shift)):
        return fail("fit is not finite", n)
    residual = _relative_residual(p, d, scale, shift)
    mask = residual < threshold
    n_inliers = int(np.count_nonzero(mask))
    if index is None:
        inliers = mask
    else:
        inliers = np.zeros(n_total, dtype=bool)
        inliers[index[mask]] = True
    stats = {"n_inliers": n_inliers, "iterations": iterations, "pred_range": support}
    if n_inliers:
        residual *= mask  # outliers' residuals to 0, in place
        stats["residual_rms"] = math.sqrt(_dot(residual, residual) / n_inliers)
        stats["residual_mean_abs"] = float(residual.sum()) / n_inliers
    if scale <= 0:
        return fail(
            f"non-positive scale {scale:.4g}: prediction and LiDAR disagree",
            n,
            scale,
            shift,
            inliers,
            **stats,
        )
    if robust:
        if n_inliers < min_inliers:
            return fail(
                f"only {n_inliers} inliers (need {min_inliers})", n, scale, shift, inliers, **stats
            )
        if n_inliers < min_inlier_ratio * n:
            return fail(
                f"inlier ratio {n_inliers / n:.2f} below {min_inlier_ratio:.2f}",
                n,
                scale,
                shift,
                inliers,
                **stats,
            )
    if min_gain_over_flat > 0.0:
        flat = _flat_inlier_ratio(d, threshold)
        stats["flat_inlier_ratio"] = flat
        gain = _gain_over_flat(n_inliers / n, flat)
        if gain < min_gain_over_flat:
            if flat >= 1.0:
                why = (
                    f"every LiDAR point is within the residual threshold ({threshold:.3g}) of one "
                    "depth, so the prediction's depth structure cannot be checked"
                )
            else:
                why = (
                    f"inlier ratio {n_inliers / n:.2f} vs {flat:.2f} for the best single depth: "
                    "the fit explains no more of the LiDAR than a flat scene would"
                )
            return fail(
                f"gain over flat {gain:.2f} below {min_gain_over_flat:.2f}: {why}",
                n,
                scale,
                shift,
                inliers,
                **stats,
            )
    return ScaleShiftFit(
        float(scale), float(shift), inliers, True, "ok", n_points=n, **meta, **stats
    )


# The helpers below keep at most one large temporary alive at a time: two live 100k-point
# temporaries make glibc return and re-fault their pages on every call, which costs more than
# the arithmetic.


def _relative_residual(p, d, scale, shift, out=None) -> np.ndarray:
    """|(s * p + t) * d - 1|: relative error of the fitted inverse depth (~ of depth)."""
    r = np.multiply(p, scale, out=out)
    r += shift
    r *= d
    r -= 1.0
    return np.abs(r, out=r)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum's own loop: np.dot goes to a multi-threaded BLAS whose thread start-up costs
    # milliseconds on a busy CPU, for a reduction that takes tens of microseconds.
    return float(np.einsum("i,i->", a, b))


def _solve_inverse_depth(p, d, w, scale_only) -> tuple[float, float]:
    """Weighted least squares for 1 / d = s * p + t (the MiDaS baseline's residual)."""
    q = np.divide(1.0, d)
    if w is not None:
        q *= w  # q now holds w * q; the sums below are the weighted ones
        s_w, s_wp, s_wpp = float(w.sum()), _dot(w, p), float(np.einsum("i,i,i->", w, p, p))
    else:
        s_w, s_wp, s_wpp = float(p.size), float(p.sum()), _dot(p, p)
    s_wq, s_wpq = float(q.sum()), _dot(q, p)
    if scale_only:
        return s_wpq / s_wpp, 0.0
    det = s_wpp * s_w - s_wp * s_wp
    return (s_wpq * s_w - s_wp * s_wq) / det, (s_wpp * s_wq - s_wp * s_wpq) / det


def _solve_relative(d, a, w, scale_only, scratch=None) -> tuple[float, float]:
    """Weighted least squares for s * a + t * d = 1 with a = p * d (relative residuals)."""
    if w is None:
        s_aa, s_a = _dot(a, a), float(a.sum())
        if scale_only:
            return s_a / s_aa, 0.0
        s_ad, s_dd, s_d = _dot(a, d), _dot(d, d), float(d.sum())
    else:
        wx = np.multiply(w, a, out=scratch)
        s_aa, s_a = _dot(wx, a), float(wx.sum())
        if scale_only:
            return s_a / s_aa, 0.0
        s_ad = _dot(wx, d)
        np.multiply(w, d, out=wx)
        s_dd, s_d = _dot(wx, d), float(wx.sum())
    det = s_aa * s_dd - s_ad * s_ad
    return (s_a * s_dd - s_d * s_ad) / det, (s_aa * s_d - s_ad * s_a) / det


def _ransac(p, d, rng, scale_only, threshold, max_iterations, confidence, sample_size):
    """Best hypothesis by MSAC score on a subsample: (scale, shift, hypotheses drawn,
    (min, max) prediction over its subsample inliers), or None."""
    n = p.size
    if n > sample_size:
        pick = rng.integers(0, n, sample_size)
        ps, ds = p[pick], d[pick]
    else:
        ps, ds = p, d
    qs = 1.0 / ds
    as32, ds32 = (ps * ds).astype(np.float32), ds.astype(np.float32)
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
            usable = np.abs(ps[i]) > p_tolerance
            s = qs[i] / np.where(usable, ps[i], 1.0)
            t = np.zeros(batch)
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
        # (hypotheses x points) squared relative residuals, truncated: the MSAC cost. float32
        # halves the memory traffic; a score needs no more precision.
        r = s[:, None].astype(np.float32) * as32
        r += t[:, None].astype(np.float32) * ds32
        r -= np.float32(1.0)
        r *= r
        cost = np.minimum(r, np.float32(thr2), out=r).sum(axis=1, dtype=np.float64)
        k = int(np.argmin(cost))
        if cost[k] < best_cost:
            best_cost = float(cost[k])
            inside = r[k] < np.float32(thr2)
            best = (float(s[k]), float(t[k]), inside)
            needed = _ransac_iterations(
                np.count_nonzero(inside) / m, minimal, confidence, max_iterations
            )
    if best is None:
        return None
    inside = best[2]
    support = (
        (float(ps[inside].min()), float(ps[inside].max())) if inside.any() else (math.nan, math.nan)
    )
    return best[0], best[1], drawn, support


def _flat_inlier_ratio(d: np.ndarray, threshold: float) -> float:
    """Largest share of the depths one constant inverse depth c explains, |c * d - 1| <
    threshold: the fullest window of width log((1 + thr) / (1 - thr)) over sorted log depth."""
    if threshold >= 1.0:
        return 1.0  # a small enough c is within the threshold of every point
    log_d = np.log(d[:: -(-d.size // _FLAT_SUBSET)])
    log_d.sort()
    width = math.log1p(threshold) - math.log1p(-threshold)
    count = np.searchsorted(log_d, log_d + width)
    count -= np.arange(log_d.size)
    return float(count.max()) / log_d.size


def _gain_over_flat(inlier_ratio: float, flat_inlier_ratio: float) -> float:
    if not math.isfinite(flat_inlier_ratio):
        return math.nan
    if flat_inlier_ratio >= 1.0:
        return 0.0  # nothing beyond a single depth to explain
    return (inlier_ratio - flat_inlier_ratio) / (1.0 - flat_inlier_ratio)


def _ransac_iterations(inlier_share: float, minimal: int, confidence: float, cap: int) -> int:
    all_inlier = inlier_share**minimal
    if all_inlier >= 1.0:
        return 1
    if all_inlier <= 0.0:
        return cap
    return min(cap, math.ceil(math.log(1.0 - confidence) / math.log(1.0 - all_inlier)))


def _irls(p, d, a, w, scale, shift, refine, iterations, threshold, scale_only):
    """Iteratively reweighted least squares (Huber or Tukey) on the relative residual.

    All but the last iteration run on a strided subset: they only settle the weights; the last
    one solves with every consensus point.
    """
    stride = max(1, p.size // _IRLS_SUBSET)
    full = (p, d, a, w)
    subset = (
        full
        if stride == 1
        else tuple(None if x is None else np.ascontiguousarray(x[::stride]) for x in full)
    )
    r_full, scratch_full = np.empty(p.size), np.empty(p.size)
    r_sub, scratch_sub = (
        (r_full, scratch_full)
        if stride == 1
        else (np.empty(subset[0].size), np.empty(subset[0].size))
    )
    for it in range(iterations):
        last = it == iterations - 1
        sp, sd, sa, sw = full if last else subset
        r, scratch = (r_full, scratch_full) if last else (r_sub, scratch_sub)
        _relative_residual(sp, sd, scale, shift, out=r)
        sigma = _MAD_TO_SIGMA * float(np.median(r[:: max(1, r.size // 2000)]))
        if refine == "huber":
            c = min(max(_HUBER_K * sigma, 1e-12), threshold)
            weight = np.maximum(r, c, out=r)
            np.divide(c, weight, out=weight)
        else:
            c = min(max(_TUKEY_C * sigma, 1e-12), threshold)
            u = np.divide(r, c, out=r)
            np.minimum(u, 1.0, out=u)
            u *= u
            np.subtract(1.0, u, out=u)
            weight = np.multiply(u, u, out=u)
        if sw is not None:
            weight *= sw
        if np.count_nonzero(weight) < 2:
            break
        new_scale, new_shift = _solve_relative(sd, sa, weight, scale_only, scratch)
        if not (math.isfinite(new_scale) and math.isfinite(new_shift)):
            break
        scale, shift = new_scale, new_shift
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
                        fit, stamp, f"re-initialised after {self._rejections} rejected jumps"
                    )
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
        if lidar_points is not None:
            if camera is None or T_cam_lidar is None:
                raise ValueError("lidar_points need a camera model and T_cam_lidar")
            t0 = time.perf_counter()
            cam = self._camera_for(camera, pred.shape[1], pred.shape[0])
            projection = project_lidar(
                lidar_points,
                T_cam_lidar,
                cam,
                min_depth=cfg.min_depth,
                max_depth=cfg.max_depth,
                zbuffer_window=cfg.zbuffer_window,
                zbuffer_margin=cfg.zbuffer_margin,
            )
            t1 = time.perf_counter()
            raw = fit_scale_shift(
                sample_prediction(pred, projection),
                projection.depth,
                pred_semantics=pred_semantics,
                **cfg.fit_kwargs(),
            )
            t2 = time.perf_counter()
            timings["project_ms"] = (t1 - t0) * 1e3
            timings["fit_ms"] = (t2 - t1) * 1e3
        fit = self.filter.update(raw, stamp_s)
        metric = None
        if fit is not None:
            t3 = time.perf_counter()
            metric = affine_to_depth(
                pred, fit.scale, fit.shift, cfg.min_depth, cfg.max_depth, fit.pred_semantics
            )
            timings["to_metric_ms"] = (time.perf_counter() - t3) * 1e3
        return Alignment(
            metric, fit, raw, projection, self.filter.state, self.filter.reason, timings
        )

    def _camera_for(self, camera: CameraModel, width: int, height: int) -> CameraModel:
        if camera.size == (width, height):
            return camera
        cached = self._scaled
        if cached is None or cached[0] is not camera or cached[1].size != (width, height):
            cached = (camera, camera.scaled(width, height))
            self._scaled = cached
        return cached[1]
