"""Publish camera frames like a camera driver: ``NS/image_raw`` + ``NS/camera_info``.

Used by the webcam demo's ``--publish NS`` so the depth node can be tried on a laptop camera
without a camera driver: remap the node's ``image``/``camera_info`` onto these topics. The
pair follows the image_transport convention (``X/image_raw`` beside ``X/camera_info``, both with
the same header) that depth_image_proc and the depth node expect.

The publisher owns its own rclpy context, so it lives beside anything else in the process.
QoS: reliable, keep last 1. A reliable publisher serves both best-effort (sensor data)
and reliable subscribers, and keep-last 1 never blocks the capture thread on a slow one.
"""

from __future__ import annotations

import numpy as np
import rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from dpt_ros.geometry import CameraModel
from dpt_ros.ros.convert import camera_to_camera_info, make_header, rgb_to_image
from dpt_ros.topics import CAMERA_INFO, IMAGE_RAW

__all__ = ["CameraPublisher"]


class CameraPublisher:
    """A node ``node_name`` publishing rgb8 ``Image`` on ``namespace/image_raw`` and the
    matching ``CameraInfo`` on ``namespace/camera_info``; both carry ``frame_id``."""

    def __init__(self, namespace: str, frame_id: str, node_name: str = "dpt_webcam") -> None:
        namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self.frame_id = frame_id
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        try:
            self.node = rclpy.create_node(node_name, context=self.context)
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=1,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.VOLATILE,
            )
            self.image_topic = f"{namespace}/{IMAGE_RAW}"
            self.info_topic = f"{namespace}/{CAMERA_INFO}"
            self._image_pub = self.node.create_publisher(Image, self.image_topic, qos)
            self._info_pub = self.node.create_publisher(CameraInfo, self.info_topic, qos)
        except BaseException:
            self.context.try_shutdown()
            raise

    def publish(self, rgb: np.ndarray, stamp_ns: int, camera: CameraModel) -> None:
        """One frame (uint8 RGB, (H, W, 3)) and its camera, stamped ``stamp_ns``."""
        header = make_header(stamp_ns, self.frame_id)
        self._image_pub.publish(rgb_to_image(rgb, header))
        self._info_pub.publish(camera_to_camera_info(camera, header))

    def subscriber_count(self) -> int:
        return self._image_pub.get_subscription_count()

    def close(self) -> None:
        self.node.destroy_node()
        self.context.try_shutdown()
