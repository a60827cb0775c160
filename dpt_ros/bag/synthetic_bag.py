"""Synthetic recordings with known depth: the bundled sample bag, test bags, benchmark bags.

A drive through one ray-cast scene (``dpt_ros.synthetic.make_scene`` with ``travel``): camera
images (raw or PNG-compressed), camera info, a ring LiDAR in its own frame, and the transform
tree on ``/tf_static`` (optionally part of it on ``/tf``), written as a rosbag2 (MCAP or
sqlite3) or a ROS 1 bag with ``rosbags``. The truth (depth, T_cam_lidar) comes back per frame.

TF tree (REP 103/105 names): ``base_link -> lidar`` (the LiDAR 1 m above the base) and
``base_link -> camera_link -> camera_optical`` (REP 103 optical frame: z forward, x right,
y down); a second camera, when asked for, is ``camera2_optical`` under ``camera_link`` at the
same pose. With ``dynamic_tf`` the ``base_link -> camera_link`` edge is on ``/tf``, moving
sideways at ``slide`` m/s, sampled before and after each frame so interpolation is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dpt_ros.geometry import CameraModel
from dpt_ros.messages import camera_model_info_fields, image_fields, pointcloud2_fields
from dpt_ros.synthetic import R_CAM_LIDAR, Scene, make_scene

LIDAR_HEIGHT = 1.0  # metres above base_link
# camera_link (x forward, y left, z up) -> optical frame: the REP 103 rotation as (x, y, z, w)
OPTICAL_IN_LINK = (-0.5, 0.5, -0.5, 0.5)


@dataclass(frozen=True)
class CameraSpec:
    namespace: str
    width: int
    height: int
    fov_deg: float = 70.0
    frame_id: str = "camera_optical"
    compressed: bool = False


@dataclass
class TruthFrame:
    """What one camera saw at one stamp, and the truth."""

    stamp_ns: int
    camera: int
    scene: Scene


def _quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation matrix -> unit quaternion (x, y, z, w)."""
    w = np.sqrt(max(0.0, 1.0 + R[0, 0] + R[1, 1] + R[2, 2])) / 2.0
    x = np.copysign(np.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])) / 2.0, R[2, 1] - R[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])) / 2.0, R[0, 2] - R[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])) / 2.0, R[1, 0] - R[0, 1])
    return float(x), float(y), float(z), float(w)


class _Messages:
    """ROS 2 rosbags dataclasses built from the shared field dicts."""

    def __init__(self, typestore: Any) -> None:
        self.t = typestore.types

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        stamp = self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
        return self.t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def image(self, rgb: np.ndarray, header: Any) -> Any:
        return self.t["sensor_msgs/msg/Image"](header=header, **image_fields(rgb, "rgb8"))

    def compressed(self, rgb: np.ndarray, header: Any) -> Any:
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("OpenCV could not encode a PNG")
        return self.t["sensor_msgs/msg/CompressedImage"](
            header=header, format="rgb8; png compressed bgr8", data=png.reshape(-1)
        )

    def camera_info(self, camera: CameraModel, header: Any) -> Any:
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=header, binning_x=0, binning_y=0, roi=roi, **camera_model_info_fields(camera)
        )

    def cloud(self, points: np.ndarray, header: Any) -> Any:
        fields = pointcloud2_fields(points)
        fields["fields"] = [
            self.t["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=c)
            for n, o, d, c in fields["fields"]
        ]
        return self.t["sensor_msgs/msg/PointCloud2"](header=header, **fields)

    def transform(
        self, stamp_ns: int, parent: str, child: str, xyz: Sequence[float], xyzw: Sequence[float]
    ) -> Any:
        t = self.t
        return t["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp_ns, parent),
            child_frame_id=child,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=xyz[0], y=xyz[1], z=xyz[2]),
                rotation=t["geometry_msgs/msg/Quaternion"](
                    x=xyzw[0], y=xyzw[1], z=xyzw[2], w=xyzw[3]
                ),
            ),
        )

    def tf(self, transforms: list[Any]) -> Any:
        return self.t["tf2_msgs/msg/TFMessage"](transforms=transforms)


def write_synthetic_bag(
    path: str | Path,
    *,
    frames: int = 20,
    cameras: Sequence[CameraSpec] = (CameraSpec("/camera", 256, 192),),
    fps: float = 10.0,
    speed: float = 5.0,
    layout: str = "street",
    seed: int = 0,
    start_ns: int = 1_700_000_000_000_000_000,
    storage: str = "mcap",
    dynamic_tf: bool = False,
    slide: float = 0.5,
    lidar_rings: int = 16,
    lidar_points_per_ring: int = 512,
    lidar_outlier_share: float = 0.0,
    lidar_offset: tuple[float, float, float] = (0.0, -0.3, -0.2),
    lidar_delay_s: float = 0.01,
    encode: Callable[[Scene], np.ndarray] | None = None,
) -> list[TruthFrame]:
    """Write a synthetic drive to ``path`` (a rosbag2 folder, or a ROS 1 bag for
    ``storage="ros1"``); returns the truth per camera frame.

    ``encode`` turns a scene into the published pixels (default: its rendered colours; tests
    pass an inverse-depth grey encoding for their stand-in model). The LiDAR scan is logged
    ``lidar_delay_s`` after the image, with the image's stamp, as drivers do. ``lidar_offset``
    is the LiDAR origin in the camera optical frame at time 0.
    """
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    ros2 = get_typestore(Stores.ROS2_JAZZY)
    make = _Messages(ros2)
    period = int(1e9 / fps)
    specs = list(cameras)
    models = [CameraModel.from_fov(c.width, c.height, c.fov_deg) for c in specs]
    # (log_ns, topic, msgtype, message)
    records: list[tuple[int, str, str, Any]] = []
    truth: list[TruthFrame] = []

    def link_pose(t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(offset of the LiDAR in the optical frame, camera_link origin in base_link)."""
        offset = np.asarray(lidar_offset, dtype=np.float64).copy()
        if dynamic_tf:
            offset[0] -= slide * t_s  # the camera slides right: the LiDAR moves left in it
        camera_in_lidar = -R_CAM_LIDAR.T @ offset
        return offset, camera_in_lidar + (0.0, 0.0, LIDAR_HEIGHT)

    static = [
        make.transform(
            start_ns, "base_link", "lidar", (0.0, 0.0, LIDAR_HEIGHT), (0.0, 0.0, 0.0, 1.0)
        )
    ]
    for spec in specs:
        static.append(
            make.transform(start_ns, "camera_link", spec.frame_id, (0.0, 0.0, 0.0), OPTICAL_IN_LINK)
        )
    if not dynamic_tf:
        _, link = link_pose(0.0)
        static.append(
            make.transform(start_ns, "base_link", "camera_link", link, (0.0, 0.0, 0.0, 1.0))
        )
    records.append((start_ns, "/tf_static", "tf2_msgs/msg/TFMessage", make.tf(static)))

    for k in range(frames):
        t_s = (k + 1) / fps
        stamp = start_ns + (k + 1) * period
        offset, _ = link_pose(t_s)
        if dynamic_tf:
            for dt in (-0.6 * period, 0.4 * period):  # samples on both sides of the frame
                s = stamp + int(dt)
                _, link = link_pose((s - start_ns) * 1e-9)
                tf = make.transform(s, "base_link", "camera_link", link, (0.0, 0.0, 0.0, 1.0))
                records.append((s, "/tf", "tf2_msgs/msg/TFMessage", make.tf([tf])))
        for i, (spec, model) in enumerate(zip(specs, models, strict=True)):
            scene = make_scene(
                spec.width,
                spec.height,
                layout=layout,
                seed=seed,
                camera=model,
                travel=speed * t_s,
                lidar_offset=tuple(offset),
                lidar_rings=lidar_rings,
                lidar_points_per_ring=lidar_points_per_ring,
                lidar_outlier_share=lidar_outlier_share,
            )
            truth.append(TruthFrame(stamp, i, scene))
            pixels = scene.rgb if encode is None else encode(scene)
            header = make.header(stamp, spec.frame_id)
            ns = spec.namespace.rstrip("/")
            if spec.compressed:
                records.append(
                    (
                        stamp,
                        f"{ns}/image_raw/compressed",
                        "sensor_msgs/msg/CompressedImage",
                        make.compressed(pixels, header),
                    )
                )
            else:
                records.append(
                    (stamp, f"{ns}/image_raw", "sensor_msgs/msg/Image", make.image(pixels, header))
                )
            records.append(
                (
                    stamp,
                    f"{ns}/camera_info",
                    "sensor_msgs/msg/CameraInfo",
                    make.camera_info(model, header),
                )
            )
            if i == 0:
                cloud = make.cloud(scene.lidar_points, make.header(stamp, "lidar"))
                records.append(
                    (
                        stamp + int(lidar_delay_s * 1e9),
                        "/lidar/points",
                        "sensor_msgs/msg/PointCloud2",
                        cloud,
                    )
                )
    records.sort(key=lambda r: r[0])
    if storage == "ros1":
        _write_ros1(path, records, ros2)
    else:
        _write_ros2(path, records, ros2, storage)
    return truth


def _write_ros2(path: Path, records: list, typestore: Any, storage: str) -> None:
    from dpt_ros.bag.writing import open_writer

    writer = open_writer(path, storage)
    try:
        connections: dict[str, Any] = {}
        for log_ns, topic, msgtype, msg in records:
            if topic not in connections:
                qos = _LATCHED() if topic == "/tf_static" else ()
                connections[topic] = writer.add_connection(
                    topic, msgtype, typestore=typestore, offered_qos_profiles=qos
                )
            writer.write(connections[topic], log_ns, typestore.serialize_cdr(msg, msgtype))
    except BaseException:
        writer.abort()
        raise
    writer.close()


def _LATCHED() -> list:  # noqa: N802 - a constant made on demand
    from rosbags.convert.converter import LATCH

    return LATCH


def _write_ros1(path: Path, records: list, ros2: Any) -> None:
    from rosbags.convert.converter import generate_message_converter
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ros1 = get_typestore(Stores.ROS1_NOETIC)
    # Noetic's store lacks tf2_msgs; its definition is one line.
    ros1.register(
        get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage")
    )
    converters: dict[str, Any] = {}
    cache: dict = {}
    with Writer(path) as writer:
        connections: dict[str, Any] = {}
        for log_ns, topic, msgtype, msg in records:
            if topic not in connections:
                connections[topic] = writer.add_connection(
                    topic, msgtype, typestore=ros1, latching=int(topic == "/tf_static")
                )
                converters[msgtype] = generate_message_converter(
                    ros2, ros1, msgtype, msgtype, cache, src_is2=True, dst_is2=False
                )
            data = converters[msgtype](ros2.serialize_cdr(msg, msgtype))
            writer.write(connections[topic], log_ns, bytes(data))
