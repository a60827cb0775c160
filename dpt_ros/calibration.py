"""Camera intrinsics from the YAML files ROS tools write, as a CameraModel.

Two formats are read:

- the calibration file of ROS ``camera_calibration`` / ``camera_info_manager`` (``ost.yaml``):
  ``image_width``, ``image_height``, ``camera_matrix: {rows, cols, data}``,
  ``distortion_model``, ``distortion_coefficients: {data}``, and optionally
  ``rectification_matrix`` and ``projection_matrix``;
- a ``sensor_msgs/CameraInfo`` as YAML, as ``ros2 topic echo --once /camera_info`` prints it
  (``width``, ``height``, ``k``, ``d``, ``distortion_model``, optionally ``r`` and ``p``; ROS
  1's capitals too; a trailing ``---`` document separator is fine).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from dpt_ros.config import yaml_problem
from dpt_ros.geometry import CameraModel
from dpt_ros.messages import CameraInfoConversionError, camera_info_to_camera

__all__ = ["CalibrationError", "read_camera_info_yaml"]


class CalibrationError(ValueError):
    """A calibration file is missing, unreadable or does not describe a camera; names the file."""


def _matrix_data(value: Any, name: str, path: Path) -> list:
    # camera_calibration writes matrices as {rows, cols, data}; accept a bare list too.
    if isinstance(value, Mapping):
        value = value.get("data")
    if not isinstance(value, list):
        raise CalibrationError(f"{path}: '{name}' must hold a list of numbers (or {{data: [...]}})")
    return value


def read_camera_info_yaml(path: str | Path) -> CameraModel:
    """The camera described by a camera_calibration or CameraInfo YAML file.

    Raises CalibrationError naming the file and the problem (missing file, not YAML, missing
    keys, an uncalibrated K, a distortion model the camera model does not know).
    """
    path = Path(path)
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except OSError as error:
        raise CalibrationError(f"cannot read camera info file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise CalibrationError(
            f"camera info file {path} is not valid YAML: {yaml_problem(error)}"
        ) from None
    if not documents or not isinstance(documents[0], Mapping):
        raise CalibrationError(f"camera info file {path} holds no mapping")
    data = documents[0]
    if "camera_matrix" in data:  # camera_calibration / camera_info_manager
        keys = ("image_width", "image_height", "camera_matrix")
        fields = {
            "width": data.get("image_width"),
            "height": data.get("image_height"),
            "k": data.get("camera_matrix"),
            "d": data.get("distortion_coefficients", []),
            "distortion_model": data.get("distortion_model", "plumb_bob"),
            "r": data.get("rectification_matrix"),
            "p": data.get("projection_matrix"),
        }
    else:  # sensor_msgs/CameraInfo (ROS 2 lower case, ROS 1 capitals)
        keys = ("width", "height", "k")
        fields = {
            "width": data.get("width"),
            "height": data.get("height"),
            "k": data.get("k", data.get("K")),
            "d": data.get("d", data.get("D", [])),
            "distortion_model": data.get("distortion_model", ""),
            "r": data.get("r", data.get("R")),
            "p": data.get("p", data.get("P")),
        }
    missing = [
        key
        for key, name in zip(keys, ("width", "height", "k"), strict=True)
        if fields[name] is None
    ]
    if missing:
        raise CalibrationError(
            f"camera info file {path} lacks {', '.join(missing)} (expected a camera_calibration "
            "YAML or a sensor_msgs/CameraInfo YAML)"
        )
    fields["k"] = _matrix_data(fields["k"], keys[2], path)
    fields["d"] = _matrix_data(fields["d"] or [], "distortion coefficients", path)
    for name, what in (("r", "rectification matrix"), ("p", "projection matrix")):
        if fields[name] is None:
            del fields[name]  # not given: R = I, P = [K | 0]
        else:
            fields[name] = _matrix_data(fields[name], what, path)
    try:
        return camera_info_to_camera(SimpleNamespace(**fields))
    except (CameraInfoConversionError, TypeError, ValueError) as error:
        raise CalibrationError(f"camera info file {path}: {error}") from None
