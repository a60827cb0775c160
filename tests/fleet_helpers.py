"""Helpers for the tests and the benchmark of the bag tool on Ray (dpt_ros.fleet).

Ray where it cannot reach the network: a private, loopback-only network namespace.

Ray's processes connect to the machine's network address even when given 127.0.0.1, so every
test and benchmark that starts Ray runs it inside a network namespace that holds nothing but
``lo`` (``unshare -n``, then ``ip link set lo up``; needs root), with usage reports switched
off (``RAY_USAGE_STATS_ENABLED=0``). The namespace also makes "no Ray process is left behind"
checkable exactly: after the run, no process may still live in it.

Small synthetic recordings: :func:`write_bag`.

Used by tests/test_fleet.py and tools/benchmark_fleet.py.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RATE_HZ = 5.0
CAMERA_FRAME, LIDAR_FRAME = "camera_optical", "lidar"
IMAGE_TOPIC = "/cam/image_raw"
# dpt_ros.synthetic.R_CAM_LIDAR (x forward, z up -> optical z forward, y down) as (x, y, z, w).
LIDAR_TO_CAMERA_QUATERNION = (0.5, -0.5, 0.5, 0.5)
PYTHON = sys.executable
# `sh -c SCRIPT sh ARGV...`: bring up loopback, then become ARGV (same pid, so signals sent to
# the Popen reach the command itself).
_LOOPBACK_THEN_EXEC = 'ip link set lo up && exec "$@"'


@functools.cache
def netns_problem() -> str:
    """'' when loopback-only namespaces can be made here, else why not (one line)."""
    try:
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", "ip link set lo up"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare/ip: {exc}"
    if done.returncode != 0:
        return f"unshare -n failed (needs root): {done.stderr.strip() or done.returncode}"
    return ""


def in_netns(argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` in a new loopback-only network namespace."""
    return ["unshare", "-n", "sh", "-c", _LOOPBACK_THEN_EXEC, "sh", *map(str, argv)]


def ray_env(**extra: str) -> dict[str, str]:
    """Environment for Ray drivers and heads: no usage reports, this checkout importable (the
    tests' stand-in models are plug-ins under ``tests.``), one torch thread per process."""
    env = dict(os.environ)
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def netns_of(pid: int) -> str:
    """The network namespace of a process, as the kernel names it ('net:[4026532177]')."""
    return os.readlink(f"/proc/{pid}/ns/net")


def own_netns(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """The namespace of a process started with :func:`in_netns`, once it has left ours."""
    ours = netns_of(os.getpid())
    deadline = time.monotonic() + timeout
    while True:
        try:
            netns = netns_of(proc.pid)
        except OSError as exc:
            raise RuntimeError(f"process {proc.pid} exited before its namespace was seen") from exc
        if netns != ours:
            return netns
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"process {proc.pid} did not enter a namespace of its own")
        time.sleep(0.01)


def processes_in(netns: str, exclude: Sequence[int] = ()) -> list[tuple[int, str]]:
    """(pid, command line) of every live process in network namespace ``netns``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            if os.readlink(entry / "ns" / "net") != netns:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # exited while we looked
            continue
        if state != "Z":  # a zombie has exited already; its parent just has not reaped it
            found.append((int(entry.name), cmdline))
    return found


def wait_until_empty(netns: str, exclude: Sequence[int] = (), timeout: float = 20.0):
    """Wait for the namespace's processes to exit; returns those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_in(netns, exclude)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


class RayHead:
    """A Ray head (``ray start --head``, 2 CPUs) in its own loopback-only namespace, shared by
    several drivers (the bag tool with ``--ray ADDRESS``), each entered with ``nsenter``."""

    def __init__(self, workdir: Path, num_cpus: int = 2, port: int = 6380, **env: str) -> None:
        self.num_cpus = num_cpus
        self.port = port
        # Ray's token authentication, with a token of our own rather than ~/.ray/auth_token.
        token = Path(workdir) / "ray_auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), **env)
        # Ray's session files (sockets, logs) in a folder of our own, not the shared /tmp/ray;
        # short, since unix socket paths are limited to 107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="dpt_ray_"))
        self.address = f"127.0.0.1:{port}"
        self._anchor: subprocess.Popen | None = None
        self.netns = ""

    def command(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside the head's namespace."""
        assert self._anchor is not None, "the head is not running"
        return ["nsenter", "-t", str(self._anchor.pid), "-n", *map(str, argv)]

    def start(self) -> RayHead:
        # A process that only holds the namespace open, so that drivers can come and go.
        self._anchor = subprocess.Popen(in_netns(["sleep", "infinity"]), env=self.env)
        self.netns = own_netns(self._anchor)
        while not self._has_loopback():  # `ip link set lo up` runs just after the unshare
            if self._anchor.poll() is not None:
                raise RuntimeError("the loopback-only namespace did not come up")
            time.sleep(0.05)
        ray = str(Path(PYTHON).with_name("ray"))
        subprocess.run(
            self.command(
                [ray, "start", "--head", f"--num-cpus={self.num_cpus}", "--num-gpus=0",
                 f"--port={self.port}", "--include-dashboard=false", "--disable-usage-stats",
                 f"--temp-dir={self.temp_dir}", "--object-store-memory=200000000"]
            ),
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        return self

    def _has_loopback(self) -> bool:
        assert self._anchor is not None
        done = subprocess.run(
            ["nsenter", "-t", str(self._anchor.pid), "-n", "ip", "-o", "addr"],
            capture_output=True,
            text=True,
        )
        return "127.0.0.1" in done.stdout

    def stop(self) -> list[tuple[int, str]]:
        """Stop Ray and the namespace: SIGTERM to every process in the namespace (all ours, by
        pid; ``ray stop`` would match other Ray instances on this machine by name), SIGKILL to
        those still alive after 5 s. Returns the ones that needed SIGKILL."""
        if self._anchor is None:
            return []
        for pid, _ in processes_in(self.netns, exclude=[self._anchor.pid]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        left = wait_until_empty(self.netns, exclude=[self._anchor.pid], timeout=5.0)
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until_empty(self.netns, exclude=[self._anchor.pid], timeout=5.0)
        self._anchor.kill()
        self._anchor.wait()
        self._anchor = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left

    def __enter__(self) -> RayHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_bag(path: Path, seconds: float, seed: int = 0) -> Path:
    """A small rosbag2 (MCAP) recording: image, camera_info, LiDAR and /tf_static at RATE_HZ.

    The grey level encodes inverse depth with a gain that drifts by a few per cent per frame
    (so each frame's LiDAR fit differs and the scale filter carries state from frame to frame).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from dpt_ros.geometry import transform_from_quaternion
    from dpt_ros.synthetic import make_scene
    from tests.ros_helpers import NEAR_M, encode_inverse_depth

    store = get_typestore(Stores.ROS2_HUMBLE)
    t = store.types
    scene = make_scene(64, 48, seed=seed, lidar_rings=16, lidar_points_per_ring=256)
    cam = scene.camera
    # tf2 convention: the transform of the child (LiDAR) frame in the parent (camera) frame.
    xyz, q = scene.T_cam_lidar[:3, 3], LIDAR_TO_CAMERA_QUATERNION
    np.testing.assert_allclose(transform_from_quaternion(xyz, q), scene.T_cam_lidar, atol=1e-12)
    points = np.ascontiguousarray(scene.lidar_points[:, :3], dtype=np.float32)

    def header(stamp: int, frame: str) -> Any:
        time_msg = t["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
        return t["std_msgs/msg/Header"](stamp=time_msg, frame_id=frame)

    def messages(i: int, stamp: int) -> dict[str, Any]:
        near = NEAR_M * (1.0 + 0.15 * np.sin(i * 0.7))
        rgb = encode_inverse_depth(scene.depth, near)
        h, w = rgb.shape[:2]
        image = t["sensor_msgs/msg/Image"](
            header=header(stamp, CAMERA_FRAME), height=h, width=w, encoding="rgb8",
            is_bigendian=0, step=w * 3, data=rgb.reshape(-1),
        )  # fmt: skip
        roi = t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        info = t["sensor_msgs/msg/CameraInfo"](
            header=header(stamp, CAMERA_FRAME), height=h, width=w, distortion_model="plumb_bob",
            d=np.zeros(5), k=cam.K.reshape(-1), r=np.eye(3).reshape(-1),
            p=np.hstack([cam.K, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0, roi=roi,
        )  # fmt: skip
        fields = [
            t["sensor_msgs/msg/PointField"](name=n, offset=4 * k, datatype=7, count=1)
            for k, n in enumerate("xyz")
        ]
        cloud = t["sensor_msgs/msg/PointCloud2"](
            header=header(stamp, LIDAR_FRAME), height=1, width=len(points), fields=fields,
            is_bigendian=False, point_step=12, row_step=12 * len(points),
            data=points.view(np.uint8).reshape(-1), is_dense=True,
        )  # fmt: skip
        return {"image": image, "info": info, "lidar": cloud}

    start = 1_700_000_000_000_000_000 + seed * 1_000_000_000
    kinds = {
        "image": (IMAGE_TOPIC, "sensor_msgs/msg/Image"),
        "info": ("/cam/camera_info", "sensor_msgs/msg/CameraInfo"),
        "lidar": ("/lidar/points", "sensor_msgs/msg/PointCloud2"),
        "tf": ("/tf_static", "tf2_msgs/msg/TFMessage"),
    }
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {k: writer.add_connection(n, m, typestore=store) for k, (n, m) in kinds.items()}
        transform = t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=xyz[0], y=xyz[1], z=xyz[2]),
            rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
        )
        stamped = t["geometry_msgs/msg/TransformStamped"](
            header=header(start, CAMERA_FRAME), child_frame_id=LIDAR_FRAME, transform=transform
        )
        tf = t["tf2_msgs/msg/TFMessage"](transforms=[stamped])
        writer.write(conns["tf"], start, store.serialize_cdr(tf, kinds["tf"][1]))
        for i in range(round(seconds * RATE_HZ)):
            stamp = start + round(i * 1e9 / RATE_HZ) + 1000
            for kind, msg in messages(i, stamp).items():
                writer.write(conns[kind], stamp, store.serialize_cdr(msg, kinds[kind][1]))
    return path
