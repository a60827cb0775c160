"""Synthetic scenes with known depth, a camera and a simulated LiDAR.

Used by tests and benchmarks of alignment, the pipeline and the node: everything a real robot
gives (RGB, camera model, LiDAR points in their own frame, the camera<-LiDAR transform) plus
the ground truth depth. Scenes are ray-cast analytically from planes and boxes, or taken from a
real RGB-D frame with the LiDAR simulated from its depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dpt_ros.geometry import CameraModel, backproject_depth, transform_points

LAYOUTS = ("street", "boxes", "planes")
RGBD_SAMPLES = ("tum", "nyu", "sun")

# LiDAR frame (x forward, y left, z up) -> camera optical frame (z forward, x right, y down).
R_CAM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])

SKY, GROUND, WALL = 0, 1, 2  # labels; boxes are numbered from FIRST_BOX
FIRST_BOX = 3


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in the camera frame (metres)."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]


@dataclass(frozen=True)
class Plane:
    """Infinite plane through ``point`` with normal ``normal`` (camera frame)."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class Scene:
    """A frame with its ground truth: what a robot's camera and LiDAR would deliver."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 z-depth in metres; inf where the ray hits nothing (sky)
    labels: np.ndarray  # (H, W) uint8: 0 sky, 1 ground, 2 wall/plane, 3+ boxes
    camera: CameraModel
    lidar_points: np.ndarray  # (N, 3) float32 in the LiDAR frame
    T_cam_lidar: np.ndarray  # (4, 4) LiDAR frame -> camera optical frame
    lidar_is_outlier: np.ndarray  # (N,) bool: points replaced by gross outliers


def lidar_transform(offset_cam: tuple[float, float, float] = (0.0, -0.3, -0.2)) -> np.ndarray:
    """T_cam_lidar for a LiDAR (x forward, z up) at ``offset_cam`` in the camera frame.

    The default puts it 0.3 m above and 0.2 m behind the camera: a typical roof mount, and a
    baseline large enough to see behind the edges of near objects.
    """
    T = np.eye(4)
    T[:3, :3] = R_CAM_LIDAR
    T[:3, 3] = offset_cam
    return T


def layout_primitives(
    layout: str, rng: np.random.Generator, camera_height: float = 1.6
) -> list[tuple[int, Plane | Box]]:
    """(label, primitive) list of a layout; box positions are drawn from ``rng``."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown scene layout {layout!r}; expected one of {LAYOUTS}")
    ground = (GROUND, Plane((0.0, camera_height, 0.0), (0.0, -1.0, 0.0)))
    prims: list[tuple[int, Plane | Box]] = [ground]
    label = FIRST_BOX
    if layout == "street":
        # Facades on both sides, cars on the road, open sky above the far end.
        for side in (-1.0, 1.0):
            z0 = rng.uniform(4.0, 10.0)
            prims.append(
                (label, Box((side * 9.0, camera_height - 6.0, z0 + 20.0), (6.0, 12.0, 40.0)))
            )
            label += 1
        for _ in range(4):
            x = rng.uniform(-4.0, 4.0)
            z = rng.uniform(5.0, 35.0)
            prims.append((label, Box((x, camera_height - 0.75, z), (1.8, 1.5, 4.2))))
            label += 1
    elif layout == "boxes":
        prims.append((WALL, Plane((0.0, 0.0, 25.0), (0.0, 0.0, -1.0))))
        for _ in range(6):
            w, h, d = rng.uniform(0.5, 2.5, size=3)
            x = rng.uniform(-6.0, 6.0)
            z = rng.uniform(3.0, 20.0)
            prims.append((label, Box((x, camera_height - h / 2.0, z), (w, h, d))))
            label += 1
    else:  # planes: a slanted wall and a back wall, no sky
        prims.append((WALL, Plane((0.0, 0.0, 30.0), (0.0, 0.0, -1.0))))
        prims.append((WALL, Plane((-3.0, 0.0, 0.0), (0.8, 0.0, -0.25))))
    return prims


def _moved(prim: Plane | Box, travel: float) -> Plane | Box:
    """The primitive as seen from ``travel`` metres further along the camera's z."""
    if not travel:
        return prim
    if isinstance(prim, Plane):
        x, y, z = prim.point
        return Plane((x, y, z - travel), prim.normal)
    x, y, z = prim.center
    return Box((x, y, z - travel), prim.size)


def raycast(
    origin: np.ndarray, directions: np.ndarray, primitives: list[tuple[int, Plane | Box]]
) -> tuple[np.ndarray, np.ndarray]:
    """Distance along each direction (in units of its length) to the nearest hit, and its label.

    inf / SKY where nothing is hit. Vectorised over rays; loops only over the few primitives.
    """
    o = np.asarray(origin, dtype=np.float64)
    dirs = np.asarray(directions, dtype=np.float64)
    best = np.full(dirs.shape[0], np.inf)
    labels = np.full(dirs.shape[0], SKY, dtype=np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
        for label, prim in primitives:
            if isinstance(prim, Plane):
                n = np.asarray(prim.normal, dtype=np.float64)
                denom = dirs @ n
                t = (np.asarray(prim.point) - o) @ n / denom
                t = np.where((denom < 0) & (t > 1e-6), t, np.inf)  # front side only
            else:
                lo = np.asarray(prim.center) - np.asarray(prim.size) / 2.0
                hi = np.asarray(prim.center) + np.asarray(prim.size) / 2.0
                t1 = (lo - o) / dirs
                t2 = (hi - o) / dirs
                t_near = np.nanmax(np.minimum(t1, t2), axis=1)
                t_far = np.nanmin(np.maximum(t1, t2), axis=1)
                t = np.where((t_far >= t_near) & (t_near > 1e-6), t_near, np.inf)
            closer = t < best
            best = np.where(closer, t, best)
            labels[closer] = label
    return best, labels


def make_scene(
    width: int = 320,
    height: int = 240,
    *,
    layout: str = "street",
    seed: int = 0,
    camera: CameraModel | None = None,
    horizontal_fov_deg: float = 70.0,
    camera_height: float = 1.6,
    lidar_offset: tuple[float, float, float] = (0.0, -0.3, -0.2),
    lidar_rings: int = 32,
    lidar_points_per_ring: int = 1024,
    lidar_elevation_deg: tuple[float, float] = (-25.0, 5.0),
    lidar_range_noise: float = 0.02,
    lidar_outlier_share: float = 0.0,
    lidar_max_range: float = 120.0,
    travel: float = 0.0,
) -> Scene:
    """A ray-cast scene: ground plane, boxes, walls and sky, seen by a camera and a LiDAR.

    The LiDAR sweeps 360 degrees in ``lidar_rings`` rings; ranges get Gaussian noise and a share
    of the returns is replaced by gross outliers (uniform range along the same beam).
    ``travel`` moves camera and LiDAR that many metres forward (camera z) through the same
    layout (same ``seed``): the frames of a drive, for recordings.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"scene size must be positive, got {width}x{height}")
    if not 0.0 <= lidar_outlier_share <= 1.0:
        raise ValueError(f"lidar_outlier_share must be in [0, 1], got {lidar_outlier_share}")
    if lidar_rings < 1 or lidar_points_per_ring < 1:
        raise ValueError("lidar_rings and lidar_points_per_ring must be >= 1")
    rng = np.random.default_rng(seed)
    if camera is None:
        camera = CameraModel.from_fov(width, height, horizontal_fov_deg)
    elif camera.size != (width, height):
        raise ValueError(f"camera is {camera.size}, scene is {(width, height)}")
    prims = [
        (label, _moved(prim, travel))
        for label, prim in layout_primitives(layout, rng, camera_height)
    ]

    rays = camera.ray_grid.reshape(-1, 3).astype(np.float64)
    finite_ray = np.isfinite(rays).all(axis=1)
    z, labels = raycast(np.zeros(3), np.where(finite_ray[:, None], rays, (0.0, 0.0, 1.0)), prims)
    z[~finite_ray] = np.nan  # pixels the distortion model cannot invert
    depth = z.reshape(height, width).astype(np.float32)
    labels = labels.reshape(height, width)
    rgb = _render(depth, labels, camera)

    T = lidar_transform(lidar_offset)
    elevation = np.radians(np.linspace(*lidar_elevation_deg, lidar_rings))
    azimuth = np.linspace(0.0, 2.0 * np.pi, lidar_points_per_ring, endpoint=False)
    azimuth = azimuth + rng.uniform(0.0, 2.0 * np.pi / lidar_points_per_ring, lidar_rings)[:, None]
    e = np.repeat(elevation[:, None], lidar_points_per_ring, axis=1)
    dirs_lidar = np.stack(
        [np.cos(e) * np.cos(azimuth), np.cos(e) * np.sin(azimuth), np.sin(e)], axis=-1
    ).reshape(-1, 3)
    rotation = T.copy()
    rotation[:3, 3] = 0.0
    ranges, _ = raycast(T[:3, 3], transform_points(rotation, dirs_lidar), prims)
    hit = ranges <= lidar_max_range
    dirs_lidar, ranges = dirs_lidar[hit], ranges[hit]
    points, outlier = _perturb_ranges(
        dirs_lidar, ranges, rng, lidar_range_noise, lidar_outlier_share, lidar_max_range
    )
    return Scene(rgb, depth, labels, camera, points, T, outlier)


def lidar_from_depth(
    depth: np.ndarray,
    camera: CameraModel,
    T_cam_lidar: np.ndarray,
    *,
    rings: int = 64,
    points_per_ring: int = 2048,
    elevation_deg: tuple[float, float] = (-30.0, 30.0),
    range_noise: float = 0.02,
    outlier_share: float = 0.0,
    max_range: float = 120.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate a ring LiDAR over a dense depth image: (points Nx3 lidar frame, is_outlier N).

    Every valid pixel becomes a 3-D point; points close to a ring's elevation are binned by
    azimuth and the nearest per bin is kept, as a spinning LiDAR would return it.
    """
    rng = np.random.default_rng(seed)
    pts_cam = backproject_depth(depth, camera).reshape(-1, 3)
    pts_cam = pts_cam[np.isfinite(pts_cam).all(axis=1)].astype(np.float64)
    T_lidar_cam = np.linalg.inv(T_cam_lidar)
    pts = transform_points(T_lidar_cam, pts_cam)
    ranges = np.linalg.norm(pts, axis=1)
    elev = np.arcsin(np.clip(pts[:, 2] / np.maximum(ranges, 1e-9), -1.0, 1.0))
    azim = np.mod(np.arctan2(pts[:, 1], pts[:, 0]), 2.0 * np.pi)
    lo, hi = np.radians(elevation_deg)
    spacing = (hi - lo) / max(rings - 1, 1)
    ring = np.rint((elev - lo) / spacing)
    # A real beam is narrow: keep only points near a ring's centre elevation.
    near_ring = (
        (np.abs(elev - (lo + ring * spacing)) < 0.15 * spacing)
        & (ring >= 0)
        & (ring < rings)
        & (ranges <= max_range)
    )
    ring = ring[near_ring].astype(np.int64)
    az_bin = np.floor(azim[near_ring] / (2.0 * np.pi) * points_per_ring).astype(np.int64)
    ranges, pts = ranges[near_ring], pts[near_ring]
    key = ring * points_per_ring + az_bin
    order = np.lexsort((ranges, key))
    first = np.ones(order.size, dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    keep = order[first]
    dirs = pts[keep] / ranges[keep, None]
    return _perturb_ranges(dirs, ranges[keep], rng, range_noise, outlier_share, max_range)


def _perturb_ranges(dirs, ranges, rng, noise, outlier_share, max_range):
    ranges = ranges + rng.normal(0.0, noise, ranges.size) if noise > 0 else ranges.copy()
    outlier = rng.random(ranges.size) < outlier_share
    # Gross errors (dust, rain, multipath, a stale scan): any range along the same beam.
    ranges[outlier] = rng.uniform(1.0, max(2.0, min(max_range, 80.0)), int(outlier.sum()))
    ranges = np.maximum(ranges, 0.05)
    return (dirs * ranges[:, None]).astype(np.float32), outlier


def make_relative_prediction(
    depth: np.ndarray,
    *,
    scale: float = 3.7,
    shift: float = 0.25,
    noise: float = 0.03,
    seed: int = 0,
) -> np.ndarray:
    """A stand-in for a relative inverse-depth network output: scale / depth + shift, with
    multiplicative Gaussian noise on the inverse depth. Sky (inf depth) gets the shift."""
    depth = np.asarray(depth, dtype=np.float64)
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.where(np.isfinite(depth) & (depth > 0), 1.0 / depth, 0.0)
    noisy = inverse * (1.0 + noise * rng.standard_normal(depth.shape))
    return (scale * noisy + shift).astype(np.float32)


def load_rgbd_sample(root: str | Path, name: str) -> tuple[np.ndarray, np.ndarray, CameraModel]:
    """One RGB-D pair from sampledata/rgbd: (rgb uint8 HxWx3, depth float32 metres, NaN
    invalid, camera). Each dataset's depth encoding is decoded as its README states."""
    root = Path(root)
    if name == "tum":
        rgb = _read_rgb(root / "tum" / "TUM_color.png")
        raw = cv2.imread(str(root / "tum" / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)
        depth = np.where(raw > 0, raw / 5000.0, np.nan)
    elif name == "nyu":
        rgb = _read_rgb(root / "nyu" / "NYU_color.ppm")
        # The PGM says big-endian but holds little-endian Kinect disparity.
        raw = _read_pgm16_little_endian(root / "nyu" / "NYU_depth.pgm").astype(np.float64)
        with np.errstate(divide="ignore"):
            depth = np.where((raw != 2047) & (raw < 1092.5), 351.3 / (1092.5 - raw), np.nan)
    elif name == "sun":
        rgb = _read_rgb(root / "sun" / "SUN_color.jpg")
        v = cv2.imread(str(root / "sun" / "SUN_depth.png"), cv2.IMREAD_UNCHANGED).astype(np.uint32)
        mm = ((v >> 3) | (v << 13)) & 0xFFFF
        depth = np.where(mm > 0, mm / 1000.0, np.nan)
    else:
        raise ValueError(f"unknown RGB-D sample {name!r}; expected one of {RGBD_SAMPLES}")
    height, width = depth.shape
    camera = CameraModel.pinhole(525.0, 525.0, 319.5, 239.5, width, height)
    return rgb, depth.astype(np.float32), camera


def scene_from_rgbd(
    root: str | Path,
    name: str,
    *,
    lidar_offset: tuple[float, float, float] = (0.0, -0.3, -0.2),
    lidar_outlier_share: float = 0.0,
    lidar_range_noise: float = 0.02,
    seed: int = 0,
) -> Scene:
    """A Scene whose truth is a real RGB-D frame; the LiDAR is simulated from its depth."""
    rgb, depth, camera = load_rgbd_sample(root, name)
    T = lidar_transform(lidar_offset)
    points, outlier = lidar_from_depth(
        depth,
        camera,
        T,
        range_noise=lidar_range_noise,
        outlier_share=lidar_outlier_share,
        seed=seed,
    )
    labels = np.where(np.isfinite(depth), GROUND, SKY).astype(np.uint8)
    return Scene(rgb, depth, labels, camera, points, T, outlier)


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_pgm16_little_endian(path: Path) -> np.ndarray:
    data = Path(path).read_bytes()
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:  # magic, width, height, maxval; '#' starts a comment line
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        tokens.append(data[pos:end])
        pos = end
    if tokens[0] != b"P5":
        raise ValueError(f"{path} is not a binary PGM (magic {tokens[0]!r})")
    width, height = int(tokens[1]), int(tokens[2])
    pos += 1  # the single whitespace byte after maxval
    return np.frombuffer(data, dtype="<u2", count=width * height, offset=pos).reshape(height, width)


def _render(depth: np.ndarray, labels: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Flat-shaded colours per label, a checkerboard on the ground and distance haze."""
    palette = np.array(
        [
            [135, 190, 235],
            [110, 110, 105],
            [180, 160, 140],
            [200, 60, 50],
            [60, 120, 200],
            [230, 200, 70],
            [90, 170, 90],
            [170, 90, 170],
            [240, 140, 60],
            [80, 200, 200],
        ],
        dtype=np.float32,
    )
    colour = palette[labels % len(palette)]
    points = backproject_depth(np.where(np.isfinite(depth), depth, 0.0), camera)
    with np.errstate(invalid="ignore"):
        checker = (np.floor(points[..., 0]) + np.floor(points[..., 2])) % 2 == 1
    colour[(labels == GROUND) & checker] *= 0.75
    haze = np.where(np.isfinite(depth), np.exp(-np.nan_to_num(depth, posinf=1e3) / 80.0), 0.0)
    sky = np.array([200, 220, 240], dtype=np.float32)
    out = colour * haze[..., None] + sky * (1.0 - haze[..., None])
    out[labels == SKY] = palette[SKY]
    return np.clip(out, 0, 255).astype(np.uint8)
