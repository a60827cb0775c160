"""Launch the dpt_ros depth node between a camera driver (and a LiDAR) and its consumers.

    ros2 launch dpt_ros depth.launch.py camera:=/camera image:=image_raw
    ros2 launch dpt_ros depth.launch.py config_file:=<share>/dpt_ros/config/kitti.yaml \\
        camera:=/kitti/camera_color_left lidar_points:=/kitti/velo/pointcloud

Parameters come from ``config_file`` (default: the package's config/depth.yaml); the launch
arguments in PARAMETER_ARGUMENTS override it only when given (an empty argument keeps the
file's value). Input topics are remapped from the camera namespace; outputs (depth/image,
points, segmentation/image, ... as in dpt_ros.topics) appear in ``namespace``. The node
process (and only it: the variable does not leak into launch files that include this one) gets
the package's large shared-memory Fast DDS profile unless FASTDDS_DEFAULT_PROFILES_FILE /
FASTRTPS_DEFAULT_PROFILES_FILE are already set.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "dpt_ros"

# launch argument -> node parameter; an empty argument leaves the config file's value.
PARAMETER_ARGUMENTS = {
    "model": "model",
    "weights": "weights",
    "segmentation_model": "segmentation_model",
    "segmentation_weights": "segmentation_weights",
    "device": "device",
    "precision": "precision",
    "net_size": "net_size",
    "image_transport": "image_transport",
    "use_lidar": "use_lidar",
    "use_sim_time": "use_sim_time",
    "autostart": "autostart",
}

# node input topic (relative) -> (namespace argument or "", topic argument, suffix): the remap
# target is the topic argument resolved in that namespace (absolute topics stay as they are).
REMAP_ARGUMENTS = {
    "image": ("camera", "image", ""),
    "image/compressed": ("camera", "image", "/compressed"),
    "camera_info": ("camera", "camera_info", ""),
    "lidar/points": ("", "lidar_points", ""),
}

# Launch arguments that are neither parameters nor remaps.
OTHER_ARGUMENTS = ("namespace", "node_name", "config_file", "fastdds_profile", "log_level")


def _topic(namespace: str, name: str) -> str:
    """``name`` under ``namespace`` unless ``name`` is absolute."""
    if name.startswith("/") or not namespace:
        return name
    return namespace.rstrip("/") + "/" + name


def _node(context, *args, **kwargs):
    # The node's own schema turns launch text into typed, validated parameter values.
    from dpt_ros.config import parse_parameter_text

    value = {name: LaunchConfiguration(name).perform(context) for name in _ALL_ARGUMENTS}
    overrides = {}
    for argument, parameter in PARAMETER_ARGUMENTS.items():
        text = value[argument].strip()
        if not text:
            continue
        if parameter == "use_sim_time":
            overrides[parameter] = text.lower() in ("true", "1", "yes")
        else:
            overrides[parameter] = parse_parameter_text(parameter, text)
    remappings = [
        (topic, _topic(value[namespace] if namespace else "", value[argument]) + suffix)
        for topic, (namespace, argument, suffix) in REMAP_ARGUMENTS.items()
    ]
    parameters = [value["config_file"]] if value["config_file"] else []
    # Fast DDS 3 (Kilted+) reads the first, Fast DDS 2 (Humble, Jazzy) the second; set for the
    # node's process only, so a launch file that includes this one keeps its own transports.
    profile = value["fastdds_profile"]
    environment = {
        "FASTDDS_DEFAULT_PROFILES_FILE": profile,
        "FASTRTPS_DEFAULT_PROFILES_FILE": profile,
    }
    if overrides:
        parameters.append(overrides)
    return [
        Node(
            package=PACKAGE,
            executable="depth_node",
            name=value["node_name"],
            namespace=value["namespace"],
            parameters=parameters,
            remappings=remappings,
            additional_env=environment,
            arguments=["--ros-args", "--log-level", value["log_level"]],
            output="screen",
            emulate_tty=True,
        )
    ]


def _arguments(share: str) -> list[DeclareLaunchArgument]:
    return [
        DeclareLaunchArgument(
            "namespace", default_value="", description="namespace of the node and its outputs"
        ),
        DeclareLaunchArgument("node_name", default_value="depth_node", description="node name"),
        DeclareLaunchArgument(
            "config_file",
            default_value=os.path.join(share, "config", "depth.yaml"),
            description="parameters file (ROS params-file format); '' = node defaults",
        ),
        DeclareLaunchArgument(
            "camera",
            default_value="/camera",
            description="camera namespace; image and camera_info are resolved in it",
        ),
        DeclareLaunchArgument(
            "image",
            default_value="image_raw",
            description="image topic (relative to camera, or absolute); with "
            "image_transport:=compressed the node reads <image>/compressed",
        ),
        DeclareLaunchArgument(
            "camera_info",
            default_value="camera_info",
            description="camera info topic (relative to camera, or absolute)",
        ),
        DeclareLaunchArgument(
            "lidar_points",
            default_value="/lidar/points",
            description="LiDAR PointCloud2 topic (read when use_lidar is true)",
        ),
        DeclareLaunchArgument(
            "use_lidar",
            default_value="",
            description="fit the metric scale to the LiDAR (true/false; '' = config file)",
        ),
        DeclareLaunchArgument(
            "model",
            default_value="",
            description="depth model name or package.module:callable ('' = config file)",
        ),
        DeclareLaunchArgument(
            "weights",
            default_value="",
            description="depth weights: 'random', a path/URL, ... ('' = config file)",
        ),
        DeclareLaunchArgument(
            "segmentation_model",
            default_value="",
            description="segmentation model, e.g. dpt_hybrid_ade20k ('' = config file)",
        ),
        DeclareLaunchArgument(
            "segmentation_weights",
            default_value="",
            description="segmentation weights: 'random', a path/URL, ... ('' = config file)",
        ),
        DeclareLaunchArgument(
            "device", default_value="", description="cpu, cuda or cuda:N ('' = config file)"
        ),
        DeclareLaunchArgument(
            "precision", default_value="", description="auto, fp32, fp16 or bf16 ('' = config file)"
        ),
        DeclareLaunchArgument(
            "net_size",
            default_value="",
            description="network input size: auto (the model's own) or a multiple of 32 "
            "('' = config file)",
        ),
        DeclareLaunchArgument(
            "image_transport",
            default_value="",
            description="raw or compressed ('' = config file)",
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="",
            description="use /clock (true when replaying bags; '' = config file / false)",
        ),
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=EnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE",
                default_value=EnvironmentVariable(
                    "FASTRTPS_DEFAULT_PROFILES_FILE",
                    default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                ),
            ),
            description="Fast DDS XML profile (default: the environment's, else the package's "
            "large shared-memory profile)",
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value="",
            description="configure and activate the lifecycle node at start-up (true/false; "
            "false leaves it to a lifecycle manager; '' = config file)",
        ),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
    ]


_ALL_ARGUMENTS = tuple(
    dict.fromkeys(
        [
            *PARAMETER_ARGUMENTS,
            *(name for ns, arg, _ in REMAP_ARGUMENTS.values() for name in (ns, arg) if name),
            *OTHER_ARGUMENTS,
        ]
    )
)


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([*_arguments(share), OpaqueFunction(function=_node)])
