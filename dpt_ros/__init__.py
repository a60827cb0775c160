"""dpt_ros: DPT depth, point clouds and segmentation for ROS 2.

Everything outside ``dpt_ros.ros`` is ROS-free and importable without rclpy.
"""

__version__ = "0.1.0"
