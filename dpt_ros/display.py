"""Windows for the live demo: can this machine show one, an OpenCV window, an Open3D cloud.

A missing or dead X server must never abort the demo, and OpenCV's Qt backend (opencv-python)
aborts the whole process when it cannot reach the display. So :func:`display_problem` asks the
X server itself (XOpenDisplay through ctypes, or its socket when libX11 is absent) before any
window is made, and :func:`gui_problem` tells an OpenCV built without GUI
(opencv-python-headless) at run time. Each returns a one-line reason or None.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import socket
import sys
from collections.abc import Mapping

import cv2
import numpy as np

from dpt_ros.export import ExportError, open3d_or_error

__all__ = ["CloudWindow", "Window", "display_problem", "gui_problem"]

WINDOW = "dpt_ros webcam"
_MAX_WINDOW_WIDTH = 1920


def gui_problem() -> str | None:
    """Why this OpenCV build cannot open windows (opencv-python-headless), or None."""
    framework = getattr(cv2, "currentUIFramework", None)
    if framework is not None:
        has_gui = bool(framework())
    else:  # older OpenCV: the build information names the GUI backend
        info = cv2.getBuildInformation()
        gui = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if "GUI:" in ln), "")
        has_gui = bool(gui) and gui.upper() != "NONE"
    if has_gui:
        return None
    return (
        "the installed OpenCV has no GUI (opencv-python-headless); for a window replace it with "
        "opencv-python (pip install .[gui])"
    )


def display_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """Why no window can be opened on this machine's display, or None (Linux/X11 only; other
    systems always have one). Checks that the X server in DISPLAY really answers, because
    OpenCV's Qt backend aborts the whole process when it does not."""
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return None
    display = environ.get("DISPLAY", "")
    if not display:
        return "no display (DISPLAY is not set)"
    if not _x_server_answers(display):
        return f"cannot connect to the X server at DISPLAY={display}"
    return None


def _x_server_answers(display: str) -> bool:
    library = ctypes.util.find_library("X11")
    if library:
        x11 = ctypes.CDLL(library)
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        handle = x11.XOpenDisplay(display.encode())
        if not handle:
            return False
        x11.XCloseDisplay(handle)
        return True
    # No libX11 (a bare server): at least the server's socket must accept a connection.
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    try:
        if host in ("", "unix"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2.0)
                sock.connect(f"/tmp/.X11-unix/X{number}")
        else:
            socket.create_connection((host, 6000 + int(number)), timeout=2.0).close()
    except OSError:
        return False
    return True


class Window:
    """The OpenCV window; ``show`` returns the key pressed (-1 for none)."""

    def __init__(self) -> None:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
        self._sized = False

    def show(self, bgr: np.ndarray, wait_ms: int = 1) -> int:
        if not self._sized:  # at most the screen-friendly 1920 px wide, keeping the aspect
            scale = min(1.0, _MAX_WINDOW_WIDTH / bgr.shape[1])
            cv2.resizeWindow(WINDOW, int(bgr.shape[1] * scale), int(bgr.shape[0] * scale))
            self._sized = True
        cv2.imshow(WINDOW, bgr)
        return cv2.waitKey(wait_ms)

    @property
    def closed(self) -> bool:
        """True once the user closed the window with the window manager."""
        try:
            return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(WINDOW)
            cv2.waitKey(1)


class CloudWindow:
    """A live Open3D point-cloud window (camera optical frame: x right, y down, z forward)."""

    def __init__(self, title: str) -> None:
        o3d = open3d_or_error("the --cloud window")
        self._o3d = o3d
        self._vis = o3d.visualization.Visualizer()
        if not self._vis.create_window(window_name=title, width=960, height=720):
            raise ExportError("Open3D could not open a window (no OpenGL on this display?)")
        self._cloud = o3d.geometry.PointCloud()
        self._added = False

    def update(self, points: np.ndarray, colors: np.ndarray | None) -> bool:
        """Show these points; False once the window was closed."""
        o3d = self._o3d
        self._cloud.points = o3d.utility.Vector3dVector(np.asarray(points, np.float64))
        if colors is not None:
            self._cloud.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
        if not self._added:
            self._vis.add_geometry(self._cloud, reset_bounding_box=True)
            view = self._vis.get_view_control()
            view.set_front([0.0, 0.0, -1.0])  # look along +z, as the camera does
            view.set_up([0.0, -1.0, 0.0])  # image up is -y in the optical frame
            self._added = True
        else:
            self._vis.update_geometry(self._cloud)
        alive = self._vis.poll_events()
        self._vis.update_renderer()
        return bool(alive)

    def close(self) -> None:
        self._vis.destroy_window()
