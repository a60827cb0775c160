"""Opening a recorded bag and choosing its topics.

Bags are read with ``rosbags``' AnyReader: rosbag2 (sqlite3 and MCAP directories, or the
``.db3`` / ``.mcap`` file inside one) and ROS 1 ``.bag`` files. Every failure becomes a
one-line BagInputError naming the file; a bag that breaks part-way (truncated, corrupt chunk)
says where it broke.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpt_ros import topics
from dpt_ros.bag.errors import BagInputError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD = "sensor_msgs/msg/PointCloud2"
TF_TYPES = ("tf2_msgs/msg/TFMessage", "tf/msg/tfMessage")
TF_TOPIC, TF_STATIC_TOPIC = topics.TF, topics.TF_STATIC
SKIP_STEP_NS = 100_000_000  # --skip-bad: where to try again after a broken part
MAX_BREAKS = 1000


def bag_path(path: str | Path) -> Path:
    """The path AnyReader wants: a rosbag2 directory (also when given the file inside it) or a
    ROS 1 ``.bag`` file. Raises BagInputError when there is nothing bag-like there."""
    path = Path(path)
    if not path.exists():
        raise BagInputError(f"{path}: no such file or directory")
    if (
        path.is_file()
        and path.suffix in (".db3", ".mcap")
        and (path.parent / "metadata.yaml").exists()
    ):
        return path.parent
    if path.is_dir():
        if not (path / "metadata.yaml").is_file():
            raise BagInputError(
                f"{path}: not a rosbag2 directory (no metadata.yaml); give a rosbag2 directory "
                "or a ROS 1 .bag file"
            )
        return path
    if path.suffix != ".bag":
        raise BagInputError(
            f"{path}: not a bag (a rosbag2 directory or a ROS 1 .bag file is expected)"
        )
    return path


def describe_error(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) < 300 else text[:297] + "..."


@contextlib.contextmanager
def open_bag(path: str | Path) -> Iterator[Any]:
    """An open ``rosbags.highlevel.AnyReader`` over one bag; BagInputError when it cannot be
    opened (missing, not a bag, corrupt index or metadata)."""
    from rosbags.highlevel import AnyReader

    path = bag_path(path)
    try:
        reader = AnyReader([path])
        reader.open()
    except Exception as error:  # rosbags raises its own, sqlite3, mcap and OS errors
        raise BagInputError(f"{path}: cannot open the bag: {describe_error(error)}") from None
    try:
        yield reader
    finally:
        with contextlib.suppress(Exception):
            reader.close()


def stream(
    reader: Any,
    path: Path,
    connections: Sequence[Any] = (),
    start: int | None = None,
    stop: int | None = None,
    skip_bad: bool = False,
    bad: list[str] | None = None,
) -> Iterator[tuple[Any, int, Any]]:
    """``reader.messages(...)`` with read errors turned into BagInputError naming the file and
    the log time of the last good message. With ``skip_bad`` the stream goes on
    ``SKIP_STEP_NS`` further on (past the broken chunk, a step at a time) and each break is
    appended to ``bad``.
    """
    last = None
    end = int(reader.end_time) if skip_bad else None
    while True:
        iterator = reader.messages(connections=connections, start=start, stop=stop)
        try:
            for item in iterator:
                if last is not None and item[1] < last:
                    continue  # re-read after a restart: already given
                last = item[1]
                yield item
            return
        except Exception as error:  # rosbags, zstd, lz4, sqlite3 errors of a broken file
            where = "before the first message" if last is None else f"after log time {last} ns"
            message = f"{path}: the bag is corrupt or truncated {where}: {describe_error(error)}"
            if not skip_bad or bad is None:
                raise BagInputError(message) from None
            if not bad or bad[-1] != message:  # one line per break, not per retry
                bad.append(message)
            base = max(v for v in (last, start, int(reader.start_time)) if v is not None)
            start = base + SKIP_STEP_NS
            if (stop is not None and start >= stop) or start > end or len(bad) > MAX_BREAKS:
                return


# ============================================================================ topics
@dataclass(frozen=True)
class CameraTopics:
    """One camera: its image topic, camera info topic and the namespace its outputs go under."""

    image: str
    compressed: bool
    camera_info: str | None
    namespace: str

    def output(self, name: str) -> str:
        """The full output topic for a ``dpt_ros.topics`` name (e.g. topics.DEPTH)."""
        return f"{self.namespace.rstrip('/')}/{name}"

    @property
    def slug(self) -> str:
        """A file-name-safe name of the camera (its namespace), for exports."""
        return self.namespace.strip("/").replace("/", "_") or "camera"


@dataclass(frozen=True)
class TopicPlan:
    cameras: tuple[CameraTopics, ...]
    lidar: str | None
    tf: str | None
    tf_static: str | None


def image_namespace(topic: str) -> str:
    """``/cam/image_raw`` -> ``/cam``; ``/cam/image_raw/compressed`` -> ``/cam``."""
    parts = topic.rstrip("/").split("/")
    if parts[-1] in ("compressed", "theora", "compressedDepth") and len(parts) > 2:
        parts = parts[:-1]
    namespace = "/".join(parts[:-1])
    return namespace or "/"


def _listing(kind: str, names: Sequence[str]) -> str:
    return ", ".join(names) if names else f"no {kind} topics"


def plan_topics(
    path: Path,
    found: dict[str, str],
    image_topics: Sequence[str] = (),
    camera_info_topics: Sequence[str] = (),
    lidar_topic: str | None = None,
) -> TopicPlan:
    """Choose the topics of one bag from ``found`` (topic -> message type).

    Exactly one topic of a kind is taken automatically; several stop with a BagInputError that
    lists them and names the flag that picks one (``--image-topic`` ...); a named topic that is
    missing or of the wrong type is an error too. ``lidar_topic`` None = auto (none when the
    bag has no PointCloud2), "" = no LiDAR.
    """
    by_type: dict[str, list[str]] = {}
    for topic, msgtype in sorted(found.items()):
        by_type.setdefault(msgtype, []).append(topic)
    images = by_type.get(IMAGE, []) + by_type.get(COMPRESSED, [])
    infos = by_type.get(CAMERA_INFO, [])
    clouds = by_type.get(POINT_CLOUD, [])

    def check(topic: str, types: Sequence[str], flag: str, kind: str, choices: list[str]) -> None:
        if topic not in found:
            raise BagInputError(
                f"{path}: {flag} {topic}: no such topic in the bag; {kind} topics: "
                f"{_listing(kind, choices)}"
            )
        if found[topic] not in types:
            raise BagInputError(
                f"{path}: {flag} {topic} is a {found[topic]}, not a {' or '.join(types)}"
            )

    if image_topics:
        for topic in image_topics:
            check(topic, (IMAGE, COMPRESSED), "--image-topic", "image", images)
        chosen = list(dict.fromkeys(image_topics))
    elif len(images) == 1:
        chosen = images
    elif not images:
        raise BagInputError(
            f"{path}: no image topic (sensor_msgs/Image or CompressedImage) in the bag; it has "
            f"{_listing('', sorted(found))}"
        )
    else:
        raise BagInputError(
            f"{path}: several image topics: {', '.join(images)}; pick with --image-topic "
            "(repeat it for several cameras)"
        )
    if camera_info_topics and len(camera_info_topics) != len(chosen):
        raise BagInputError(
            f"{path}: {len(camera_info_topics)} --camera-info-topic for {len(chosen)} image "
            "topic(s); give one per --image-topic, in the same order"
        )
    for topic in camera_info_topics:
        check(topic, (CAMERA_INFO,), "--camera-info-topic", "camera_info", infos)

    cameras = []
    for i, topic in enumerate(chosen):
        namespace = image_namespace(topic)
        if camera_info_topics:
            info = camera_info_topics[i]
        else:
            beside = f"{namespace.rstrip('/')}/{topics.CAMERA_INFO}"
            if beside in infos:
                info = beside
            elif len(infos) == 1 and len(chosen) == 1:
                info = infos[0]
            elif not infos:
                info = None  # relative depth only; the summary says why
            else:
                raise BagInputError(
                    f"{path}: no camera_info beside {topic} and several camera_info topics: "
                    f"{', '.join(infos)}; pick with --camera-info-topic"
                )
        cameras.append(CameraTopics(topic, found[topic] == COMPRESSED, info, namespace))
    namespaces = [c.namespace for c in cameras]
    if len(set(namespaces)) != len(namespaces):
        raise BagInputError(
            f"{path}: image topics {', '.join(chosen)} share the namespace of their outputs; "
            "pick one per camera namespace with --image-topic"
        )

    if lidar_topic:
        check(lidar_topic, (POINT_CLOUD,), "--lidar-topic", "PointCloud2", clouds)
        lidar = lidar_topic
    elif lidar_topic == "" or not clouds:
        lidar = None
    elif len(clouds) == 1:
        lidar = clouds[0]
    else:
        raise BagInputError(
            f"{path}: several PointCloud2 topics: {', '.join(clouds)}; pick the LiDAR with "
            "--lidar-topic (or --no-lidar)"
        )
    tf = TF_TOPIC if found.get(TF_TOPIC) in TF_TYPES else None
    tf_static = TF_STATIC_TOPIC if found.get(TF_STATIC_TOPIC) in TF_TYPES else None
    return TopicPlan(tuple(cameras), lidar, tf, tf_static)


def topic_types(reader: Any) -> dict[str, str]:
    """topic -> message type of every topic with messages of one type."""
    return {name: info.msgtype for name, info in reader.topics.items() if info.msgtype}


def quiet(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a rosbags helper that prints progress notes to stdout, without the prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)
