"""Topic names shared by every front end (ROS 2 node, bag tool, webcam publisher).

Relative names, so a node's namespace and remaps apply, and the bag tool can put them under
the namespace of the image topic they come from. Each image topic pairs with a ``camera_info``
beside it, as image_transport and depth_image_proc expect (``X/image`` with ``X/camera_info``).
"""

from __future__ import annotations

# Inputs.
IMAGE = "image"
IMAGE_COMPRESSED = "image/compressed"
CAMERA_INFO = "camera_info"
# The LiDAR input; not "points", which is the output cloud (a remap would catch both).
LIDAR_POINTS = "lidar/points"
INPUT_TOPICS = (IMAGE, IMAGE_COMPRESSED, CAMERA_INFO, LIDAR_POINTS)
# What a camera driver publishes (beside CAMERA_INFO); the webcam demo's --publish does too.
IMAGE_RAW = "image_raw"
# The transform tree (absolute, as tf2 names them): read by the bag tool from a bag, and by the
# node itself when tf2_ros is not importable.
TF, TF_STATIC = "/tf", "/tf_static"

# Outputs.
DEPTH = "depth/image"  # 32FC1 metres (REP 117/118: NaN unknown, +Inf beyond range, -Inf too close)
DEPTH_INFO = "depth/camera_info"
DEPTH_COLOR = "depth/color"  # bgr8 colour map of the depth
DEPTH_RELATIVE = "depth_relative/image"  # 32FC1 relative inverse depth
DEPTH_RELATIVE_INFO = "depth_relative/camera_info"
SEGMENTATION = "segmentation/image"  # mono8 ADE20K class index + 1, 0 = "other"
SEGMENTATION_COLOR = "segmentation/color"  # bgr8 palette overlay
SEGMENTATION_INFO = "segmentation/camera_info"
POINTS = "points"  # PointCloud2 x, y, z, rgb in the camera's optical frame

OUTPUT_TOPICS = (
    DEPTH,
    DEPTH_INFO,
    DEPTH_COLOR,
    DEPTH_RELATIVE,
    DEPTH_RELATIVE_INFO,
    SEGMENTATION,
    SEGMENTATION_COLOR,
    SEGMENTATION_INFO,
    POINTS,
)
CAMERA_INFO_TOPICS = (DEPTH_INFO, DEPTH_RELATIVE_INFO, SEGMENTATION_INFO)
DEPTH_TOPICS = (DEPTH, DEPTH_INFO, DEPTH_COLOR, DEPTH_RELATIVE, DEPTH_RELATIVE_INFO, POINTS)
LABEL_TOPICS = (SEGMENTATION, SEGMENTATION_COLOR, SEGMENTATION_INFO)
