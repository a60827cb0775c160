"""Frames from a camera, a video file, a stream or a folder of images, on a capture thread.

``open_source(text)`` turns what a user types into a :class:`FrameSource`:

- ``0``, ``1``, ...: a camera index (OpenCV VideoCapture, V4L2 on Linux);
- ``rtsp://...``, ``http://...`` (anything with ``://``): a network stream (OpenCV/FFmpeg);
- a folder: its image files in name order; a pattern with ``*``, ``?`` or ``[``: the matching
  image files in name order;
- anything else: a video file.

It reads the first frame before returning, so a camera that cannot be opened, a missing file or
a stream that delivers nothing fail at once with a :class:`SourceError` naming the source.

:class:`CaptureThread` reads frames on its own thread. Live sources (cameras, streams, and files
with ``realtime=True``, paced at their frame rate) hand over through a :class:`LatestSlot`: the
newest frame wins and each replaced one is counted as dropped, so a slow consumer never builds a
backlog. Files and folders otherwise hand over every frame in order (the reader waits).
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dpt_ros.config import InputSettings
from dpt_ros.messages import image_file_size_problem

__all__ = [
    "CaptureThread",
    "CapturedFrame",
    "FrameSource",
    "IMAGE_SUFFIXES",
    "LatestSlot",
    "SourceError",
    "open_source",
]

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GLOB_CHARS = ("*", "?", "[")
MAX_IMAGE_PIXELS = InputSettings().max_image_pixels  # the node's limit (8K UHD)
# A live source that delivers nothing for this long has stopped (unplugged camera, dead stream).
_LIVE_READ_FAILURES = 50


class SourceError(RuntimeError):
    """A source cannot be opened or read; the message names it."""


class LatestSlot:
    """A one-item mailbox: ``put`` replaces what is there (and says so), ``take`` waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store ``item``; True when it replaced an item nobody had taken (a drop)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout: float | None = None) -> Any:
        """The newest item, or None on timeout or after ``close``."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def full(self) -> bool:
        """Whether an item waits to be taken."""
        with self._cond:
            return self._item is not None


@dataclass(frozen=True, eq=False)
class CapturedFrame:
    """One frame as read: RGB uint8 (H, W, 3), its 0-based index in the source, the wall-clock
    stamp (ns since the epoch) and ``time.perf_counter()`` at the read, for latency."""

    rgb: np.ndarray
    index: int
    stamp_ns: int
    grabbed: float


class FrameSource:
    """Frames of one source; ``read()`` gives RGB uint8 or None at the end.

    ``live``: a camera or stream (frames come at their own pace and are dropped when the
    consumer is slow). ``fps``: the nominal frame rate (0 when unknown). ``frame_count``:
    frames in a file or folder (0 when unknown or live). ``unreadable``: images of a folder that
    could not be decoded (skipped with a warning).
    """

    def __init__(self, description: str, live: bool, fps: float, frame_count: int) -> None:
        self.description = description
        self.live = live
        self.fps = fps
        self.frame_count = frame_count
        self.unreadable = 0

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file (idempotent)."""


class _VideoSource(FrameSource):
    """A camera, stream or video file through cv2.VideoCapture."""

    def __init__(self, capture: cv2.VideoCapture, description: str, live: bool) -> None:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = 0 if live else max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        super().__init__(description, live, fps if 0 < fps < 1000 else 0.0, count)
        self._capture = capture
        ok, bgr = capture.read()
        if not ok or bgr is None:
            capture.release()
            what = "delivers no frames" if live else "cannot be decoded (no readable frame)"
            raise SourceError(f"{description} {what}")
        self._first: np.ndarray | None = _to_rgb(bgr)

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            rgb, self._first = self._first, None
            return rgb
        failures = 0
        while True:
            ok, bgr = self._capture.read()
            if ok and bgr is not None:
                return _to_rgb(bgr)
            failures += 1
            if not self.live or failures >= _LIVE_READ_FAILURES:
                if self.live:
                    LOG.warning("%s stopped delivering frames", self.description)
                return None
            time.sleep(0.01)

    def close(self) -> None:
        self._capture.release()


class _ImageFilesSource(FrameSource):
    """Image files in a fixed order (a folder or a glob)."""

    def __init__(self, paths: list[Path], description: str) -> None:
        super().__init__(description, live=False, fps=0.0, frame_count=len(paths))
        self._paths = iter(paths)
        first = self._next_image()
        if first is None:
            raise SourceError(f"{description}: none of its {len(paths)} images can be decoded")
        self._first: np.ndarray | None = first

    def _next_image(self) -> np.ndarray | None:
        for path in self._paths:
            try:  # the header's size first: a few bytes can claim 16000x16000
                too_large = image_file_size_problem(path, MAX_IMAGE_PIXELS)
            except OSError as error:
                too_large = f"cannot read it ({error.strerror or error})"
            bgr = None if too_large else cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is not None:
                return _to_rgb(bgr)
            self.unreadable += 1
            LOG.warning("skipping %s: %s", path, too_large or "not an image OpenCV can decode")
        return None

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            rgb, self._first = self._first, None
            return rgb
        return self._next_image()


def _to_rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    if bgr.shape[2] == 4:
        return cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _quiet_opencv() -> None:
    # OpenCV's and FFmpeg's own messages ("can't open camera by index", "moov atom not found")
    # would bury the one line that names the problem. Users can still set both variables.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    logging_module = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_module is not None:
        logging_module.setLogLevel(logging_module.LOG_LEVEL_ERROR)


def _image_files(paths: list[str]) -> list[Path]:
    return sorted(Path(p) for p in paths if Path(p).suffix.lower() in IMAGE_SUFFIXES)


def open_source(text: str, width: int = 0, height: int = 0, fps: float = 0.0) -> FrameSource:
    """Open what ``text`` names (see the module docstring). ``width``, ``height`` and ``fps``
    are requests to a camera (0 = the driver's default); files ignore them.

    Raises SourceError naming the source when it cannot be opened or yields no frame.
    """
    text = str(text).strip()
    _quiet_opencv()
    if text.isdigit():
        index = int(text)
        capture = cv2.VideoCapture(index)
        description = f"camera {index}"
        if not capture.isOpened():
            raise SourceError(f"cannot open {description} (no such camera, or it is busy)")
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, width),
            (cv2.CAP_PROP_FRAME_HEIGHT, height),
            (cv2.CAP_PROP_FPS, fps),
        ):
            if value:
                capture.set(prop, value)
        return _VideoSource(capture, description, live=True)
    if "://" in text:
        description = f"stream {text}"
        capture = cv2.VideoCapture(text)
        if not capture.isOpened():
            raise SourceError(f"cannot open {description} (unreachable, or not a video stream)")
        return _VideoSource(capture, description, live=True)
    path = Path(text).expanduser()
    if path.is_dir():
        files = _image_files([str(p) for p in path.iterdir()])
        if not files:
            raise SourceError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return _ImageFilesSource(files, f"folder {path}")
    if any(char in text for char in _GLOB_CHARS) and not path.exists():
        files = _image_files(glob.glob(os.path.expanduser(text)))
        if not files:
            raise SourceError(f"pattern {text!r} matches no image files")
        return _ImageFilesSource(files, f"images {text!r}")
    if not path.exists():
        raise SourceError(f"video file not found: {path}")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise SourceError(f"video file {path} is not a readable file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"video file {path} cannot be opened (not a video OpenCV can decode)")
    return _VideoSource(capture, f"video file {path}", live=False)


class CaptureThread:
    """Reads ``source`` on a thread and hands frames to one consumer through :meth:`get`.

    ``drop=True`` (live sources, or files with realtime pacing): newest frame wins, replaced
    frames count in ``dropped``. ``drop=False``: every frame in order; the reader waits for the
    consumer. ``pace_fps`` > 0 reads a file no faster than that rate (``--realtime``).
    ``on_frame`` is called on the capture thread with every frame read (e.g. to publish it).
    """

    def __init__(
        self,
        source: FrameSource,
        drop: bool,
        pace_fps: float = 0.0,
        on_frame: Callable[[CapturedFrame], None] | None = None,
    ) -> None:
        self.source = source
        self.drop = drop
        self.pace_fps = pace_fps
        self.on_frame = on_frame
        self.captured = 0
        self.dropped = 0
        self._unhanded = 0  # read, then the run stopped before the consumer could take it
        self.error: BaseException | None = None
        self._slot = LatestSlot()
        self._queue: queue.Queue[CapturedFrame] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dpt_capture", daemon=True)

    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    @property
    def ended(self) -> bool:
        """True once the source is exhausted (or failed) and every frame has been taken."""
        return self._ended.is_set() and self.pending == 0

    @property
    def pending(self) -> int:
        """Frames read but not yet taken."""
        return self._queue.qsize() + int(self._slot.full) + self._unhanded

    def get(self, timeout: float = 0.05) -> CapturedFrame | None:
        """The next frame to process, or None when none came within ``timeout``."""
        if self.drop:
            return self._slot.take(timeout)
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        """Stop reading and release the source; frames still pending stay counted there."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.source.close()

    def _run(self) -> None:
        start = time.perf_counter()
        try:
            while not self._stop.is_set():
                if self.pace_fps > 0:
                    delay = start + self.captured / self.pace_fps - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
                rgb = self.source.read()
                if rgb is None:
                    break
                frame = CapturedFrame(rgb, self.captured, time.time_ns(), time.perf_counter())
                self.captured += 1
                if self.on_frame is not None:
                    self.on_frame(frame)
                if self.drop:
                    if self._slot.put(frame):
                        self.dropped += 1
                    continue
                while True:
                    if self._stop.is_set():
                        self._unhanded += 1
                        break
                    try:
                        self._queue.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # handed to the consumer, which reports it
            self.error = error
        finally:
            self._ended.set()
