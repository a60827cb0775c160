"""The launch file, the YAML configs, the DDS profile and the settings schema agree.

``launch`` and ``launch_ros`` are not installable from PyPI, so the launch file is checked two
ways: its structure by parsing it with ``ast``, and its behaviour by running it against small
stand-ins of the few launch classes it uses, which record what the real ones would receive.
"""

from __future__ import annotations

import ast
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

from dpt_ros.config import (
    ROS_BUILTIN_PARAMETERS,
    ConfigError,
    NodeSettings,
    load_settings,
    parameter_specs,
    parse_parameter_text,
    read_parameters_file,
    settings_from_mapping,
    settings_to_parameters,
    spec_by_name,
    update_settings,
)

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "depth.launch.py"
CONFIGS = sorted((REPO / "config").glob("*.yaml"))
DECLARED = spec_by_name(NodeSettings)
# What a launch user must be able to choose without writing a YAML file.
MUST_EXPOSE = {"model", "weights", "device", "precision", "use_lidar", "image_transport"}


# ============================================================================ launch: structure
def _launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _module_constant(name: str):
    for node in _launch_tree().body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{LAUNCH_FILE.name} defines no {name}")


def _declared_arguments() -> dict[str, ast.Call]:
    out = {}
    for node in ast.walk(_launch_tree()):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            name = node.args[0]
            assert isinstance(name, ast.Constant), "launch argument names must be literals"
            assert name.value not in out, f"launch argument {name.value!r} declared twice"
            out[name.value] = node
    return out


def test_every_launch_argument_is_a_parameter_remap_or_known_setting() -> None:
    declared = set(_declared_arguments())
    parameters = _module_constant("PARAMETER_ARGUMENTS")
    remaps = _module_constant("REMAP_ARGUMENTS")
    others = set(_module_constant("OTHER_ARGUMENTS"))
    remap_args = {name for ns, arg, _ in remaps.values() for name in (ns, arg) if name}
    mapped = set(parameters) | remap_args | others
    assert declared == mapped, (
        f"declared but unmapped: {sorted(declared - mapped)}; "
        f"mapped but not declared: {sorted(mapped - declared)}"
    )
    assert not set(parameters) & (remap_args | others)


def test_parameter_arguments_map_to_declared_node_parameters() -> None:
    parameters = _module_constant("PARAMETER_ARGUMENTS")
    for argument, parameter in parameters.items():
        assert parameter in DECLARED or parameter in ROS_BUILTIN_PARAMETERS, (
            f"launch argument {argument!r} sets {parameter!r}, which the node does not declare"
        )
    missing = MUST_EXPOSE - set(parameters.values())
    assert not missing, f"parameters without a launch argument: {sorted(missing)}"


def test_remaps_name_the_node_inputs() -> None:
    from dpt_ros.ros import node

    remaps = _module_constant("REMAP_ARGUMENTS")
    assert set(remaps) == set(node.INPUT_TOPICS)


def test_parameter_argument_defaults_are_empty_or_valid() -> None:
    parameters = _module_constant("PARAMETER_ARGUMENTS")
    for name, call in _declared_arguments().items():
        default = next((k.value for k in call.keywords if k.arg == "default_value"), None)
        description = next((k.value for k in call.keywords if k.arg == "description"), None)
        assert description is not None, f"launch argument {name!r} has no description"
        if name in parameters and parameters[name] in DECLARED:
            assert isinstance(default, ast.Constant), f"{name!r} default must be a literal"
            if default.value:
                parse_parameter_text(parameters[name], default.value)


def test_launch_sets_no_environment_for_other_launch_files() -> None:
    # SetEnvironmentVariable would leak the profile into every launch file including this one.
    calls = {
        getattr(node.func, "id", None)
        for node in ast.walk(_launch_tree())
        if isinstance(node, ast.Call)
    }
    assert "SetEnvironmentVariable" not in calls


# ============================================================================ launch: behaviour
class _Recorder:
    """Stands in for a launch class: keeps its arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorder):
    def perform(self, context: dict) -> str:
        return context[self.args[0]]


class _EnvironmentVariable(_Recorder):
    def perform(self, context: dict) -> str:
        import os

        default = self.kwargs.get("default_value", "")
        if isinstance(default, _Recorder):
            default = default.perform(context)
        return os.environ.get(self.args[0], default)


@pytest.fixture
def launch_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    fakes = {
        "launch": {"LaunchDescription": _Recorder},
        "launch.actions": {
            "DeclareLaunchArgument": _Recorder,
            "OpaqueFunction": _Recorder,
        },
        "launch.substitutions": {
            "EnvironmentVariable": _EnvironmentVariable,
            "LaunchConfiguration": _LaunchConfiguration,
        },
        "launch_ros": {},
        "launch_ros.actions": {"Node": _Recorder},
        "ament_index_python": {},
        "ament_index_python.packages": {
            "get_package_share_directory": lambda package: str(tmp_path / "share" / package)
        },
    }
    for name, attrs in fakes.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    namespace: dict = {"__name__": "depth_launch"}
    exec(compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec"), namespace)
    return namespace, tmp_path / "share" / "dpt_ros"


def _run_launch(namespace: dict, arguments: dict[str, str]):
    description = namespace["generate_launch_description"]()
    actions = description.args[0]
    declared = {a.args[0]: a.kwargs for a in actions if "default_value" in a.kwargs}
    context = {}
    for name, kwargs in declared.items():
        default = kwargs["default_value"]
        context[name] = default.perform({}) if isinstance(default, _Recorder) else default
    context.update(arguments)
    opaque = [a for a in actions if "function" in a.kwargs]
    assert len(opaque) == 1 and len(actions) == len(declared) + 1  # nothing but the node
    (node,) = opaque[0].kwargs["function"](context)
    return node.kwargs, node.kwargs["additional_env"], context


def test_launch_defaults_load_depth_yaml_and_the_shipped_profile(
    launch_module, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, share = launch_module
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)
    node, env, _ = _run_launch(namespace, {})
    assert node["package"] == "dpt_ros" and node["executable"] == "depth_node"
    assert node["parameters"] == [str(share / "config" / "depth.yaml")]
    profile = str(share / "config" / "fastdds_shm.xml")
    assert env == {
        "FASTDDS_DEFAULT_PROFILES_FILE": profile,
        "FASTRTPS_DEFAULT_PROFILES_FILE": profile,
    }
    assert dict(node["remappings"]) == {
        "image": "/camera/image_raw",
        "image/compressed": "/camera/image_raw/compressed",
        "camera_info": "/camera/camera_info",
        "lidar/points": "/lidar/points",
    }


def test_launch_keeps_a_profile_already_in_the_environment(
    launch_module, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, _ = launch_module
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/etc/my_profile.xml")
    _, env, _ = _run_launch(namespace, {})
    assert set(env.values()) == {"/etc/my_profile.xml"}


def test_launch_arguments_become_typed_parameters_and_remaps(launch_module) -> None:
    namespace, _ = launch_module
    node, _, _ = _run_launch(
        namespace,
        {
            "namespace": "front",
            "camera": "/kitti/camera_color_left",
            "lidar_points": "/kitti/velo/pointcloud",
            "image": "/elsewhere/image",
            "model": "dpt_hybrid_kitti",
            "device": "cuda:0",
            "precision": "fp16",
            "net_size": "512",
            "use_lidar": "true",
            "use_sim_time": "true",
            "config_file": "/tmp/robot.yaml",
        },
    )
    assert node["namespace"] == "front"
    config_file, overrides = node["parameters"]
    assert config_file == "/tmp/robot.yaml"
    assert overrides == {
        "model": "dpt_hybrid_kitti",
        "device": "cuda:0",
        "precision": "fp16",
        "net_size": 512,
        "use_lidar": True,
        "use_sim_time": True,
    }
    remaps = dict(node["remappings"])
    assert remaps["image"] == "/elsewhere/image"
    assert remaps["image/compressed"] == "/elsewhere/image/compressed"
    assert remaps["camera_info"] == "/kitti/camera_color_left/camera_info"
    assert remaps["lidar/points"] == "/kitti/velo/pointcloud"


def test_launch_rejects_a_bad_argument_with_the_parameter_name(launch_module) -> None:
    namespace, _ = launch_module
    with pytest.raises(ConfigError, match="'net_size'.*multiple of 32"):
        _run_launch(namespace, {"net_size": "500"})


# ============================================================================ YAML configs
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_files_hold_only_declared_parameters_with_valid_values(path: Path) -> None:
    settings = load_settings(path)
    assert isinstance(settings, NodeSettings)
    flat = read_parameters_file(path)
    assert flat, f"{path.name} sets nothing"
    for name in flat:
        assert name in DECLARED or name in ROS_BUILTIN_PARAMETERS, name


def test_depth_yaml_lists_every_parameter_at_its_default() -> None:
    flat = read_parameters_file(REPO / "config" / "depth.yaml")
    assert set(flat) == set(DECLARED), sorted(set(DECLARED) ^ set(flat))
    for name, spec in DECLARED.items():
        assert spec.coerce(flat[name]) == spec.default, name


def test_kitti_yaml_is_a_lidar_setup_with_a_transform() -> None:
    settings = load_settings(REPO / "config" / "kitti.yaml")
    assert settings.input.use_lidar
    T = settings.lidar_transform_from_parameters
    # LiDAR x forward, z up -> camera z forward, y down; mounted behind and above the camera.
    np.testing.assert_allclose(T[:3, :3], [[0, -1, 0], [0, 0, -1], [1, 0, 0]], atol=1e-9)
    assert T[2, 3] < 0 and T[1, 3] < 0


# ============================================================================ DDS profile
def test_fastdds_profile_adds_a_large_shm_transport_and_nothing_that_widens_discovery() -> None:
    root = ET.parse(REPO / "config" / "fastdds_shm.xml").getroot()

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    elements = {local(e.tag): e for e in root.iter()}
    descriptors = [e for e in root.iter() if local(e.tag) == "transport_descriptor"]
    shm = [d for d in descriptors if any(local(c.tag) == "type" and c.text == "SHM" for c in d)]
    assert len(shm) == 1
    size = next(int(c.text) for c in shm[0] if local(c.tag) == "segment_size")
    assert size >= 64 * 1024 * 1024
    assert elements["useBuiltinTransports"].text.strip() == "true"
    participant = elements["participant"]
    assert participant.get("is_default_profile") == "true"
    # Anything here could send discovery or data beyond what ROS_AUTOMATIC_DISCOVERY_RANGE allows.
    widening = {
        "initialPeersList",
        "metatrafficUnicastLocatorList",
        "metatrafficMulticastLocatorList",
        "defaultUnicastLocatorList",
        "defaultMulticastLocatorList",
        "discoveryServersList",
        "discoveryProtocol",
        "interfaceWhiteList",
    }
    assert not widening & set(elements)


# ============================================================================ settings schema
def test_every_parameter_has_a_description_and_sane_constraints() -> None:
    for spec in parameter_specs(NodeSettings):
        assert spec.description, spec.name
        assert spec.coerce(spec.default) == spec.default, spec.name
        if spec.range is not None:
            assert spec.kind in ("int", "float") and spec.range[0] <= spec.range[1]
    read_only = {s.name for s in parameter_specs(NodeSettings) if s.read_only}
    assert {"model", "weights", "device", "precision"} <= read_only
    runtime = {s.name for s in parameter_specs(NodeSettings) if not s.read_only}
    assert {"align.gate", "align.method", "cloud.stride", "viz.colormap"} <= runtime


def test_descriptors_carry_type_range_and_read_only() -> None:
    from rcl_interfaces.msg import ParameterType

    from dpt_ros.ros.node import parameter_descriptor

    gate = parameter_descriptor(DECLARED["align.gate"])
    assert gate.type == ParameterType.PARAMETER_DOUBLE and not gate.read_only
    assert (gate.floating_point_range[0].from_value, gate.floating_point_range[0].to_value) == (
        0.0,
        100.0,
    )
    stride = parameter_descriptor(DECLARED["cloud.stride"])
    assert stride.type == ParameterType.PARAMETER_INTEGER
    assert (stride.integer_range[0].from_value, stride.integer_range[0].to_value) == (1, 64)
    model = parameter_descriptor(DECLARED["model"])
    assert model.read_only and model.type == ParameterType.PARAMETER_STRING and model.description
    method = parameter_descriptor(DECLARED["align.method"])
    assert "ransac" in method.additional_constraints
    T = parameter_descriptor(DECLARED["lidar_T_cam_lidar"])
    assert T.type == ParameterType.PARAMETER_DOUBLE_ARRAY


def test_params_file_and_plain_mapping_give_the_same_settings(tmp_path: Path) -> None:
    values = {"model": "dpt_large", "align": {"gate": 0.5, "method": "lstsq"}, "cloud.stride": 4}
    ros = tmp_path / "ros.yaml"
    ros.write_text(yaml.safe_dump({"/**/depth_node": {"ros__parameters": values}}))
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(values))
    a, b = load_settings(ros), load_settings(plain)
    assert a == b
    assert (a.model.model, a.align.gate, a.align.method, a.cloud.stride) == (
        "dpt_large",
        0.5,
        "lstsq",
        4,
    )


def test_params_file_sections_for_other_nodes_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"device": "cuda"}},
                "other_node": {"ros__parameters": {"anything": 1}},
                "depth_node": {"ros__parameters": {"net_size": 512, "use_sim_time": True}},
            }
        )
    )
    settings = load_settings(path)
    assert (settings.model.device, settings.model.net_size) == ("cuda", 512)
    only_other = tmp_path / "other.yaml"
    only_other.write_text(yaml.safe_dump({"other_node": {"ros__parameters": {"x": 1}}}))
    with pytest.raises(ConfigError, match="no section for node 'depth_node'"):
        read_parameters_file(only_other)


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"align.gate": -1.0}, r"'align.gate': must be in \[0.0, 100.0\], got -1.0"),
        ({"cloud": {"stride": 2.5}}, r"'cloud.stride': must be an integer"),
        ({"device": "gpu"}, r"'device': must be 'cpu', 'cuda' or 'cuda:N'"),
        ({"precision": "int8"}, r"'precision': must be one of"),
        ({"net_size": 100}, r"'net_size': must be a multiple of 32"),
        ({"use_lidar": "yes"}, r"'use_lidar': must be true or false"),
        ({"align.gte": 0.3}, r"'align.gte' \(did you mean 'align.gate'\?\)"),
        ({"lidar_translation": [1.0, 2.0]}, r"'lidar_translation': must hold 0 or 3 numbers"),
        ({"lidar_translation": [0.0, 0.0, 1.0]}, r"'lidar_translation' and 'lidar_rotation'"),
        ({"lidar_T_cam_lidar": [2.0] * 16}, r"'lidar_T_cam_lidar'"),
        ({"align": {"min_depth": 300.0}}, r"align.min_depth .* must be below max_depth"),
        ({"viz.min_depth": 9.0, "viz.max_depth": 3.0}, r"'viz.min_depth'"),
        ({"output_width": 640}, r"'output_width' and 'output_height'"),
    ],
)
def test_bad_values_name_the_parameter_and_the_reason(values: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        settings_from_mapping(values)


def test_bad_file_value_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("depth_node:\n  ros__parameters:\n    align:\n      gate: -2.0\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: parameter 'align.gate'"):
        load_settings(path)


def test_update_settings_validates_the_whole_and_keeps_the_rest() -> None:
    base = settings_from_mapping({"align.max_depth": 80.0, "cloud.stride": 3})
    new = update_settings(base, {"align.min_depth": 5.0})
    assert (new.align.min_depth, new.align.max_depth, new.cloud.stride) == (5.0, 80.0, 3)
    with pytest.raises(ConfigError, match="min_depth"):
        update_settings(base, {"align.min_depth": 90.0})
    assert settings_to_parameters(new)["align.min_depth"] == 5.0


def test_integer_text_for_a_float_parameter_is_accepted() -> None:
    assert settings_from_mapping({"align.gate": 1}).align.gate == 1.0
    assert parse_parameter_text("align.gate", "1") == 1.0
    assert parse_parameter_text("model", "123") == "123"
    assert parse_parameter_text("lidar_translation", "[0, 1, 2]") == (0.0, 1.0, 2.0)
    assert parse_parameter_text("use_lidar", "true") is True


def test_engine_and_pipeline_configs_follow_the_settings() -> None:
    settings = settings_from_mapping(
        {
            "model": "dpt_hybrid",
            "weights": "random",
            "threads": 0,
            "output_width": 320,
            "output_height": 240,
            "cloud": {"stride": 3, "organized": True},
            "align": {"method": "lstsq"},
        }
    )
    engine = settings.model.engine_config()
    assert (engine.weights, engine.threads, engine.output_size) == ("random", None, (320, 240))
    assert engine.segmentation_model is None
    pipeline = settings.pipeline_config()
    assert (pipeline.cloud_stride, pipeline.cloud_organized, pipeline.align.method) == (
        3,
        True,
        "lstsq",
    )


def test_bag_and_webcam_settings_share_the_schema() -> None:
    from dpt_ros.config import BagSettings, WebcamSettings

    bag = settings_from_mapping({"net_size": 256, "storage": "sqlite3"}, BagSettings)
    assert (bag.node.model.net_size, bag.storage, bag.node.align.method) == (
        256,
        "sqlite3",
        "ransac",
    )
    # Every node parameter is a bag parameter under the same name.
    node_names = {spec.name for spec in parameter_specs(NodeSettings)}
    assert node_names <= {spec.name for spec in parameter_specs(BagSettings)}
    webcam = settings_from_mapping({"source": "video.mp4", "viz": {"colormap": "gray"}},
                                   WebcamSettings)  # fmt: skip
    assert (webcam.source, webcam.viz.colormap, webcam.model.model) == (
        "video.mp4",
        "gray",
        "dpt_hybrid",
    )
    with pytest.raises(ConfigError, match="'use_lidar'"):
        settings_from_mapping({"use_lidar": True}, WebcamSettings)
