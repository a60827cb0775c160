"""package.xml declares what the code imports, with rosdep keys that exist; setup.py and setup.cfg
install what ``colcon``, ``ros2 run`` and ``ros2 launch`` look for.

rosdep resolves the ``python3-*`` keys from ``rosdep/python.yaml`` in ros/rosdistro. The keys in
``VERIFIED_ROSDEP_KEYS`` were read there at ``ROSDISTRO_COMMIT``; ``NO_ROSDEP_KEY`` lists the names
looked for and not found (``python3-safetensors-pip`` among them), whose libraries reach ROS's
Python through pip instead (README, "A full ROS 2 install"). A new third-party import fails
``test_every_import_is_declared_or_comes_from_pip`` until it is classified here.
"""

from __future__ import annotations

import ast
import configparser
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "dpt_ros"
SCANNED = (REPO / "dpt_ros", REPO / "launch")

ROSDISTRO_COMMIT = "000730dc5f916eb05b15d3f183bd1c17bf1b4722"  # ros/rosdistro, rosdep/python.yaml
# key -> what it installs on Ubuntu/Debian (as written in rosdep/python.yaml at that commit)
VERIFIED_ROSDEP_KEYS = {
    "python3-numpy": "apt python3-numpy",
    "python3-opencv": "apt python3-opencv",
    "python3-yaml": "apt python3-yaml",
    "python3-pil": "apt python3-pil",
    "python3-tqdm": "apt python3-tqdm",
    "python3-pytest": "apt python3-pytest",
    # an alias of python-pytorch-pip (anchor migrate_eol_2025_04_30_python3_pytorch_pip)
    "python3-pytorch-pip": "pip torch, torchvision",
    "python3-timm-pip": "pip timm",
    "python3-open3d-pip": "pip open3d",
    "python3-transformers-pip": "pip transformers",
}
# Looked for in rosdep/python.yaml at ROSDISTRO_COMMIT and absent.
NO_ROSDEP_KEY = (
    "python3-safetensors",
    "python3-safetensors-pip",
    "python3-rosbags",
    "python3-rosbags-pip",
    "python3-torch",
    "python3-ray",
    "python3-ray-pip",
)
# Python module -> the rosdep key that provides it (declared in package.xml).
MODULE_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "PIL": "python3-pil",
    "tqdm": "python3-tqdm",
    "torch": "python3-pytorch-pip",
    "timm": "python3-timm-pip",
}
# Python module -> (its pip distribution in requirements*.txt, why package.xml does not name it).
PIP_ONLY = {
    "safetensors": ("safetensors", "no rosdep key"),
    "rosbags": ("rosbags", "no rosdep key"),
    "ray": ("ray", "no rosdep key; optional (bag fleets)"),
    "open3d": (
        "open3d-cpu",
        "optional (PLY export, cloud window); python3-open3d-pip would install the full "
        "open3d wheel for every user",
    ),
}
# ROS 2 packages whose Python module has the package's name. An import of one of these anywhere
# under dpt_ros/ or launch/ must be an <exec_depend> (or <depend>).
ROS_PACKAGES = frozenset(
    {
        "action_msgs",
        "ament_index_python",
        "builtin_interfaces",
        "cv_bridge",
        "diagnostic_msgs",
        "geometry_msgs",
        "launch",
        "launch_ros",
        "lifecycle_msgs",
        "message_filters",
        "nav_msgs",
        "rcl_interfaces",
        "rclpy",
        "rosbag2_py",
        "rosgraph_msgs",
        "rosidl_runtime_py",
        "sensor_msgs",
        "sensor_msgs_py",
        "std_msgs",
        "std_srvs",
        "stereo_msgs",
        "tf2_msgs",
        "tf2_py",
        "tf2_ros",
        "unique_identifier_msgs",
        "visualization_msgs",
    }
)
# ROS packages needed at run time that no module imports. ros2launch ships in the launch_ros
# repository (ros/rosdistro kilted/distribution.yaml@0013c554954f, with launch_ros and launch).
NEEDED_NOT_IMPORTED = {
    "ros2launch": "the `ros2 launch` verb for launch/depth.launch.py "
    "(ROS 2 docs, 'Integrating launch files into ROS 2 packages')",
}


# ============================================================================ helpers
def _depends() -> dict[str, list[str]]:
    """package.xml: dependency tag (exec_depend, test_depend, ...) -> names, in file order."""
    root = ET.parse(REPO / "package.xml").getroot()
    out: dict[str, list[str]] = {}
    for element in root:
        if element.tag.endswith("depend"):
            out.setdefault(element.tag, []).append(element.text.strip())
    return out


def _run_time_depends() -> set[str]:
    tags = _depends()
    return set(tags.get("exec_depend", [])) | set(tags.get("depend", []))


def _imports() -> dict[str, set[str]]:
    """Top-level module -> files (relative) importing it, module level or inside functions,
    including ``importlib.import_module("literal")``; relative imports are skipped."""
    found: dict[str, set[str]] = {}
    for base in SCANNED:
        for path in sorted(base.rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "attr", getattr(node.func, "id", None))
                    == "import_module"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and not node.args[0].value.startswith(".")
                ):
                    names = [node.args[0].value]
                for name in names:
                    top = name.split(".")[0]
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _third_party_imports() -> dict[str, set[str]]:
    return {
        module: files
        for module, files in _imports().items()
        if module != PACKAGE and module not in sys.stdlib_module_names
    }


def _requirement_names() -> set[str]:
    names = set()
    for path in REPO.glob("requirements*.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                for separator in ("==", ">=", "<=", "~=", "!=", ">", "<", "[", ";", " "):
                    line = line.split(separator, 1)[0]
                names.add(line.strip().lower().replace("_", "-"))
    return names


def _setup_kwargs(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The keyword arguments setup.py passes to setuptools.setup (run from the repo root, as
    colcon runs it)."""
    import setuptools

    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO)
    source = (REPO / "setup.py").read_text()
    exec(compile(source, str(REPO / "setup.py"), "exec"), {"__name__": "__main__"})
    assert captured, "setup.py did not call setuptools.setup"
    return captured


# ============================================================================ package.xml
def test_package_xml_is_format_3_ament_python_and_matches_setup_py(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == PACKAGE
    assert root.findtext("export/build_type") == "ament_python"
    setup = _setup_kwargs(monkeypatch)
    assert setup["name"] == PACKAGE
    assert root.findtext("version") == setup["version"]
    assert root.findtext("license") == setup["license"]


def test_every_rosdep_key_was_verified_in_rosdistro() -> None:
    """(a) every dependency is a ROS package or a key read in rosdistro at ROSDISTRO_COMMIT."""
    ros_names = ROS_PACKAGES | set(NEEDED_NOT_IMPORTED)
    for tag, names in _depends().items():
        for name in names:
            if name in ros_names:
                continue
            assert name not in NO_ROSDEP_KEY, (
                f"package.xml <{tag}>{name}: no such rosdep key in ros/rosdistro "
                f"rosdep/python.yaml@{ROSDISTRO_COMMIT[:12]}; install it with pip (README)"
            )
            assert name in VERIFIED_ROSDEP_KEYS, (
                f"package.xml <{tag}>{name}: neither an imported ROS package nor a rosdep key "
                f"verified in ros/rosdistro@{ROSDISTRO_COMMIT[:12]}; look it up in "
                "rosdep/python.yaml or rosdep/base.yaml and record it in VERIFIED_ROSDEP_KEYS"
            )


def test_declared_ros_packages_are_imported_or_needed() -> None:
    """(a) a ROS package in package.xml is imported under dpt_ros/ or launch/ (or is in
    NEEDED_NOT_IMPORTED with its reason): no stale dependencies."""
    imported = _imports()
    for tag, names in _depends().items():
        for name in names:
            if name in ROS_PACKAGES:
                assert name in imported, f"package.xml <{tag}>{name}: nothing imports it"


def test_declared_rosdep_keys_are_used() -> None:
    imported = _third_party_imports()
    key_modules = {key: module for module, key in MODULE_KEYS.items()}
    for name in _depends().get("exec_depend", []):
        if name in VERIFIED_ROSDEP_KEYS:
            assert name in key_modules, f"<exec_depend>{name}: no module mapped to it"
            assert key_modules[name] in imported, (
                f"<exec_depend>{name}: nothing under dpt_ros/ or launch/ imports "
                f"{key_modules[name]!r}"
            )


def test_every_import_is_declared_or_comes_from_pip() -> None:
    """(b) every ROS package imported under dpt_ros/ and launch/ is a run-time dependency; every
    other third-party module has its rosdep key declared or comes from requirements*.txt."""
    declared = _run_time_depends()
    requirements = _requirement_names()
    problems = []
    for module, files in sorted(_third_party_imports().items()):
        where = ", ".join(sorted(files))
        if module in ROS_PACKAGES:
            if module not in declared:
                problems.append(f"ROS package {module} ({where}) is not an <exec_depend>")
        elif module in MODULE_KEYS:
            if MODULE_KEYS[module] not in declared:
                problems.append(f"{module} ({where}): <exec_depend>{MODULE_KEYS[module]} missing")
        elif module in PIP_ONLY:
            distribution = PIP_ONLY[module][0]
            if distribution not in requirements:
                problems.append(f"{module} ({where}): {distribution} not in requirements*.txt")
        else:
            problems.append(
                f"{module} ({where}): unknown import; add it to ROS_PACKAGES, MODULE_KEYS (with a "
                "rosdep key verified in rosdistro) or PIP_ONLY"
            )
    assert not problems, "\n".join(problems)


def test_the_scan_finds_the_imports_it_must_see() -> None:
    """The import scanner itself: module-level, function-level and launch-file imports."""
    imported = _imports()
    assert "dpt_ros/ros/node.py" in imported["rclpy"]
    assert "dpt_ros/ros/node.py" in imported["rcl_interfaces"]
    assert "launch/depth.launch.py" in imported["ament_index_python"]
    assert "launch/depth.launch.py" in imported["launch_ros"]
    assert "dpt_ros/ros/tf.py" in imported["tf2_ros"]  # imported inside a function
    assert "dpt_ros/model/weights.py" in imported["safetensors"]  # likewise


# ============================================================================ setup.py / cfg
def test_setup_installs_the_ament_marker_package_xml_launch_and_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed: dict[str, set[str]] = {}
    for destination, files in _setup_kwargs(monkeypatch)["data_files"]:
        installed.setdefault(destination, set()).update(files)
    marker = f"resource/{PACKAGE}"
    assert (REPO / marker).is_file()
    assert marker in installed["share/ament_index/resource_index/packages"]
    assert "package.xml" in installed[f"share/{PACKAGE}"]
    launch = {str(p.relative_to(REPO)) for p in (REPO / "launch").glob("*.launch.py")}
    assert launch and launch <= installed[f"share/{PACKAGE}/launch"]
    config = {
        str(p.relative_to(REPO))
        for p in (REPO / "config").iterdir()
        if p.suffix in (".yaml", ".xml")
    }
    assert {"config/depth.yaml", "config/fastdds_shm.xml"} <= config
    assert config <= installed[f"share/{PACKAGE}/config"]


def test_console_scripts_exist_and_the_launch_file_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scripts = {}
    for entry in _setup_kwargs(monkeypatch)["entry_points"]["console_scripts"]:
        name, target = (part.strip() for part in entry.split("="))
        scripts[name] = target
    for name, target in scripts.items():
        module, function = target.split(":")
        path = REPO / (module.replace(".", "/") + ".py")
        functions = {
            n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)
        }
        assert function in functions, f"console script {name}: {target} does not exist"
    assert scripts["depth_node"] == "dpt_ros.ros.node:main"
    launch = ast.parse((REPO / "launch" / "depth.launch.py").read_text())
    executables = {
        keyword.value.value
        for node in ast.walk(launch)
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "executable" and isinstance(keyword.value, ast.Constant)
    }
    assert executables and executables <= set(scripts)


def test_setup_cfg_installs_scripts_where_ros2_run_looks() -> None:
    """``ros2 run <package> <exe>`` runs <prefix>/lib/<package>/<exe>."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "setup.cfg")
    assert config.get("develop", "script_dir") == f"$base/lib/{PACKAGE}"
    assert config.get("install", "install_scripts") == f"$base/lib/{PACKAGE}"
