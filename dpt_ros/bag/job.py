"""One bag (or one time chunk of it) through the pipeline: ``BagJob`` and ``process_bag``.

Three threads, joined by short bounded queues, so memory stays bounded by a few frames whatever
the bag's length:

    reader:    rosbags stream -> Matcher (buffers, lookahead, decode) -> segment boundaries
    inference: batches of ``batch_size`` frames -> Engine.infer_batch -> Pipeline
               .process_prediction (LiDAR fit, filter, metres, cloud), in stamp order
    writer:    copies and outputs -> the current segment bag (rosbags Writer), exports, journal

On the CPU reading/decoding and writing run beside inference; on CUDA the engine's own streams
overlap upload, compute and download of a batch. See ``dpt_ros.bag.segments`` for the work
folder, resume and the final atomic rename.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpt_ros.bag.errors import BagInputError, BagOutputError
from dpt_ros.bag.exports import Exporter
from dpt_ros.bag.matching import CopyEvent, ImageEvent, Matcher
from dpt_ros.bag.options import BagOptions
from dpt_ros.bag.reading import TopicPlan, bag_path, open_bag, plan_topics, stream, topic_types
from dpt_ros.bag.report import JobReport
from dpt_ros.bag.segments import WorkDir, decode_filter, input_identity
from dpt_ros.bag.writing import MessageFactory, OutputBag, frame_outputs, ros2_typestore
from dpt_ros.export import model_metadata
from dpt_ros.tf_buffer import TfBuffer

QUEUE_SIZE = 8
LIDAR_CONTEXT_S = 1.0  # scans read before a resumed/chunk start, beyond the stamp tolerance
TF_PROBE_MESSAGES = 500  # /tf messages read up front to see which frames /tf connects


@dataclass
class Boundary:
    """The current segment ends before log time ``log_ns``."""

    log_ns: int | None  # None: the end of the run
    filter_state: dict | None = None


_END = object()


def _items(source: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    """What a stage's input queue delivers, until ``_END`` or a stop (polled, so that a stop is
    seen even while the queue stays empty)."""
    while not stop.is_set():
        try:
            item = source.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is _END:
            return
        yield item


@dataclass(frozen=True)
class JobPlan:
    """What a job will do, known before any processing: topics and where T_cam_lidar comes
    from (None without LiDAR)."""

    path: Path
    topics: TopicPlan
    transform: str | None
    message_count: int
    image_count: int
    malformed_tf_static: int = 0


class BagJob:
    """Process one bag, or the chunk ``[start_ns, end_ns)`` of its log time, into ``output``.

    ``output`` (a rosbag2 folder) appears only when complete (``dpt_ros.bag.segments``); an
    existing one is refused unless ``overwrite``; ``resume`` continues an interrupted run.
    A chunk copies the input messages and writes the outputs whose log time is in
    ``[start_ns, end_ns)``; the images of the ``warmup_s`` seconds before ``start_ns`` only
    feed the temporal filter, so merged chunks (``merge_bags``) match a sequential run once the
    filter has converged. ``engine`` reuses a built ``Engine`` (its device wins);
    ``depth_model`` / ``segmentation_model`` are torch modules standing in for the configured
    ones. Every input or output problem is a one-line ``BagError``.
    """

    def __init__(
        self,
        input: str | Path,  # noqa: A002
        output: str | Path,
        options: BagOptions | None = None,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        warmup_s: float = 5.0,
        overwrite: bool = False,
        resume: bool = False,
        engine: Any = None,
        depth_model: Any = None,
        segmentation_model: Any = None,
    ) -> None:
        self.input = Path(input)
        self.output = Path(output)
        self.options = options if options is not None else BagOptions()
        self.start_ns, self.end_ns, self.warmup_s = start_ns, end_ns, float(warmup_s)
        self.overwrite, self.resume = overwrite, resume
        self.engine = engine
        self.depth_model, self.segmentation_model = depth_model, segmentation_model
        if start_ns is not None and end_ns is not None and end_ns <= start_ns:
            raise BagInputError(f"{self.input}: chunk end {end_ns} is not after start {start_ns}")

    # ------------------------------------------------------------------ planning
    def _check_paths(self) -> None:
        source = bag_path(self.input).resolve()
        out = self.output.resolve()
        if out == source or source in out.parents or out in source.parents:
            raise BagOutputError(
                f"{self.output}: the output would overwrite or sit inside the input {self.input}"
            )
        if out.exists() and not self.overwrite and not self.resume:
            raise BagOutputError(f"{self.output} exists; give --overwrite to replace it")
        if not out.parent.is_dir():
            problem = "is not a folder" if out.parent.exists() else "does not exist"
            raise BagOutputError(f"{self.output}: the folder {out.parent} {problem}")

    def plan(self) -> JobPlan:
        """Open the bag, choose topics and check the camera<-LiDAR transform (BagInputError
        before any processing when LiDAR is in use and no transform is available)."""
        self._check_paths()
        with open_bag(self.input) as reader:
            return self._plan(reader, TfBuffer())

    def _plan(self, reader: Any, tf: TfBuffer) -> JobPlan:
        options = self.options
        path = bag_path(self.input)
        plan = plan_topics(
            path,
            topic_types(reader),
            options.image_topics,
            options.camera_info_topics,
            options.lidar_topic,
        )
        by_topic: dict[str, list[Any]] = {}
        for connection in reader.connections:
            by_topic.setdefault(connection.topic, []).append(connection)
        malformed = 0
        if plan.tf_static:
            for connection, _, raw in stream(reader, path, by_topic[plan.tf_static]):
                try:
                    tf.add_message(reader.deserialize(raw, connection.msgtype), static=True)
                except Exception:  # a malformed transform is counted, never fatal
                    malformed += 1
        transform = None
        if plan.lidar:
            transform = self._check_transform(reader, path, plan, by_topic, tf)
        counts = {c.topic: c.msgcount for c in reader.connections}
        images = sum(counts.get(c.image, 0) for c in plan.cameras)
        return JobPlan(path, plan, transform, reader.message_count, images, malformed)

    def _first(self, reader: Any, path: Path, connections: list[Any]) -> Any:
        for connection, _, raw in stream(reader, path, connections):
            try:
                return reader.deserialize(raw, connection.msgtype)
            except Exception:  # a malformed first message: try the next
                continue
        return None

    def _check_transform(
        self, reader: Any, path: Path, plan: TopicPlan, by_topic: dict, tf: TfBuffer
    ) -> str:
        node = self.options.settings.node
        source = node.input.lidar_transform_source
        scan = self._first(reader, path, by_topic[plan.lidar])
        lidar_frame = str(scan.header.frame_id) if scan is not None else ""
        probe = TfBuffer()  # the static tree plus the first /tf messages
        if plan.tf_static:
            for connection, _, raw in stream(reader, path, by_topic[plan.tf_static]):
                with contextlib.suppress(Exception):  # malformed ones were reported already
                    probe.add_message(reader.deserialize(raw, connection.msgtype), static=True)
        if plan.tf and source != "parameters":
            for i, (connection, _, raw) in enumerate(stream(reader, path, by_topic[plan.tf])):
                if i >= TF_PROBE_MESSAGES:
                    break
                try:
                    probe.add_message(reader.deserialize(raw, connection.msgtype))
                except Exception:  # malformed /tf messages are counted when processing
                    continue
        where = []
        for camera in plan.cameras:
            image = self._first(reader, path, by_topic[camera.image])
            camera_frame = str(image.header.frame_id) if image is not None else ""
            if source != "parameters" and tf.connected(camera_frame, lidar_frame):
                where.append("the bag's /tf_static")
            elif source != "parameters" and probe.connected(camera_frame, lidar_frame):
                where.append("the bag's /tf")
            elif source != "tf" and node.lidar_transform_from_parameters is not None:
                where.append("the settings (lidar_T_cam_lidar / lidar_translation)")
            else:
                frames = sorted(set(tf.frames) | set(probe.frames))
                raise BagInputError(
                    f"{path}: LiDAR {plan.lidar} (frame {lidar_frame!r}) needs the transform to "
                    f"camera {camera.image} (frame {camera_frame!r}), but the bag's /tf_static "
                    f"and /tf do not connect them (frames: {frames or 'none'})"
                    + (
                        ""
                        if source == "tf"
                        else " and --config sets no lidar_T_cam_lidar or "
                        "lidar_translation + lidar_rotation"
                    )
                    + "; give a --config with the transform, or --no-lidar"
                )
        return ", ".join(dict.fromkeys(where))

    # ------------------------------------------------------------------ running
    def _make_engine(self) -> Any:
        if self.engine is not None:
            return self.engine
        from dpt_ros.engine import Engine

        settings = self.options.settings
        config = dataclasses.replace(
            settings.node.model.engine_config(), batch_size=settings.batch_size
        )
        return Engine(
            config, depth_model=self.depth_model, segmentation_model=self.segmentation_model
        )

    def run(self, progress: Callable[[int], None] | None = None) -> JobReport:
        """Process the bag; returns the report. BagError for input and output problems."""
        started = time.perf_counter()
        self._check_paths()
        path = bag_path(self.input)
        work = WorkDir(self.output)
        identity = {
            "input": str(path.resolve()),
            **input_identity(path),
            "options": self.options.fingerprint(),
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
        }
        with open_bag(path) as reader:
            tf = TfBuffer()
            plan = self._plan(reader, tf)
            journal = work.check(identity, self.resume, self.overwrite)
            report = JobReport()
            if journal.get("report"):
                counters = {k: v for k, v in journal["report"].items() if k != "scales_count"}
                report = JobReport(**counters, scales=work.scales())
            report.input, report.output = str(self.input), str(self.output)
            if plan.malformed_tf_static and not journal.get("report"):
                report.malformed["malformed tf_static"] = plan.malformed_tf_static
            if plan.transform:
                note = f"camera<-LiDAR transform from {plan.transform}"
                if note not in report.notes:
                    report.notes.append(note)
            from dpt_ros.pipeline import Pipeline

            engine = self._make_engine()  # before the work folder: a model that cannot load
            try:
                work.start(journal, self.resume)  # leaves nothing behind
            except OSError as error:  # an unwritable place (read-only, /proc, no space)
                raise BagOutputError(
                    f"{self.output}: cannot write {work.path}: {error.strerror or error}"
                ) from None
            pipeline = Pipeline(engine, self.options.settings.node.pipeline_config())
            segments = journal["segments"]
            begin = self.start_ns
            warm_from = None if begin is None else begin - int(self.warmup_s * 1e9)
            if segments:
                if segments[-1]["next_ns"] is None:  # every segment done: only the finish left
                    begin = warm_from = None
                else:
                    begin = warm_from = segments[-1]["next_ns"]
                    report.resumed_from_frame = report.frames_in
                pipeline.restore_filter(decode_filter(journal["filter"]))
            if not (segments and segments[-1]["next_ns"] is None):
                try:
                    self._process(
                        reader,
                        path,
                        plan,
                        tf,
                        pipeline,
                        engine,
                        work,
                        report,
                        begin,
                        warm_from,
                        progress,
                    )
                except BagInputError:
                    # A broken input fails the same way again: nothing worth resuming.
                    if not self.resume:
                        shutil.rmtree(work.path, ignore_errors=True)
                    raise
            settings = self.options.settings
            exporter = Exporter(
                work.exports_dir, self.options.exports, settings.png_format, settings.node.viz
            )  # the previews only: no per-frame files
            written = exporter.finish(plan.topics.cameras)
        work.finish(self.options.settings.storage, self.overwrite)
        # The exports moved into the output with it.
        final = self.output / "exports"
        for key, where in written.items():
            report.exports[key] = str(final / Path(where).relative_to(work.exports_dir))
        report.wall_s += time.perf_counter() - started
        return report

    def _process(
        self,
        reader: Any,
        path: Path,
        plan: JobPlan,
        tf: TfBuffer,
        pipeline: Any,
        engine: Any,
        work: WorkDir,
        report: JobReport,
        begin: int | None,
        warm_from: int | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        options = self.options
        node = options.settings.node
        lock = threading.Lock()  # the reader counts malformed messages into the report
        matcher = Matcher(
            reader,
            plan.topics,
            node,
            tf=tf,
            copy_range=(begin, self.end_ns),
            process_range=(begin, self.end_ns),
            warm_from=warm_from,
            T_parameters=node.lidar_transform_from_parameters,
            counters=report.malformed,
            lock=lock,
        )
        errors: list[BaseException] = []
        stop = threading.Event()
        to_infer: queue.Queue = queue.Queue(QUEUE_SIZE)
        to_write: queue.Queue = queue.Queue(QUEUE_SIZE)

        def put(q: queue.Queue, item: Any) -> None:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def reader_thread() -> None:
            try:
                self._read(
                    reader,
                    path,
                    plan,
                    matcher,
                    begin,
                    warm_from,
                    lambda item: put(to_infer, item),
                    report,
                )
            except BaseException as error:  # handed to the caller's thread
                errors.append(error)
                stop.set()
            finally:
                put(to_infer, _END)

        def writer_thread() -> None:
            try:
                self._write(reader, plan, engine, work, report, to_write, stop, progress, lock)
            except BaseException as error:
                errors.append(error)
                stop.set()

        threads = [
            threading.Thread(target=reader_thread, name="bag-reader", daemon=True),
            threading.Thread(target=writer_thread, name="bag-writer", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            self._infer(pipeline, engine, to_infer, lambda item: put(to_write, item), stop)
        except BaseException as error:
            errors.append(error)
            stop.set()
        finally:
            put(to_write, _END)
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ reader
    def _read(self, reader, path, plan, matcher, begin, warm_from, emit, report) -> None:
        options = self.options
        topics = plan.topics
        by_topic: dict[str, list[Any]] = {}
        for connection in reader.connections:
            by_topic.setdefault(connection.topic, []).append(connection)
        first = warm_from if warm_from is not None else begin
        if first is not None:
            # Context before the first processed image: camera infos and /tf from the start
            # (they may be latched once), scans shortly before it.
            context = [
                c
                for t in (topics.tf, *(c.camera_info for c in topics.cameras))
                if t
                for c in by_topic.get(t, [])
            ]
            for connection, log_ns, raw in stream(reader, path, context, stop=first):
                matcher.observe(connection, log_ns, raw)
            if topics.lidar:
                tolerance = options.settings.node.input.lidar_stamp_tolerance
                since = first - int((tolerance + LIDAR_CONTEXT_S) * 1e9)
                for connection, log_ns, raw in stream(
                    reader, path, by_topic[topics.lidar], start=since, stop=first
                ):
                    matcher.observe(connection, log_ns, raw)
        stop_at = None
        if self.end_ns is not None:
            stop_at = self.end_ns + matcher.lookahead_ns + 1
        in_segment = 0
        last_log = None
        for connection, log_ns, raw in stream(
            reader,
            path,
            (),
            start=first,
            stop=stop_at,
            skip_bad=options.skip_bad,
            bad=report.bad_messages,
        ):
            for event in matcher.feed(connection, log_ns, raw):
                in_segment, last_log = self._emit(event, emit, in_segment, last_log)
        for event in matcher.finish():
            in_segment, last_log = self._emit(event, emit, in_segment, last_log)

    def _emit(self, event: Any, emit: Callable, in_segment: int, last_log: int | None):
        if isinstance(event, ImageEvent) and not event.warmup:
            # Cut only where the log time steps up, so "from log time T on" is exact.
            if (
                in_segment >= self.options.segment_frames
                and last_log is not None
                and (event.log_ns > last_log)
            ):
                emit(Boundary(event.log_ns))
                in_segment = 0
            in_segment += 1
        emit(event)
        return in_segment, event.log_ns

    # ------------------------------------------------------------------ inference
    def _infer(self, pipeline, engine, source: queue.Queue, emit: Callable, stop) -> None:
        want_depth = getattr(engine, "depth_model", None) is not None
        want_labels = getattr(engine, "segmentation_model", None) is not None
        need_depth, need_labels = pipeline.wanted(want_depth, want_labels, want_depth)
        batch: list[ImageEvent] = []
        size = self.options.settings.batch_size

        def flush() -> None:
            if not batch:
                return
            # What Pipeline.process feeds the engine: the rectified image when rectify is on.
            predictions = engine.infer_batch(
                [pipeline.engine_input(e.frame) for e in batch],
                want_depth=need_depth,
                want_labels=need_labels,
            )
            for event, prediction in zip(batch, predictions, strict=True):
                result = pipeline.process_prediction(
                    event.frame, prediction, want_depth, want_labels, want_depth
                )
                emit((event, result))
            batch.clear()

        for item in _items(source, stop):
            if isinstance(item, ImageEvent) and item.frame is not None:
                batch.append(item)
                if len(batch) >= size:
                    flush()
                continue
            if isinstance(item, Boundary):
                flush()
                item.filter_state = pipeline.snapshot_filter()
            emit(item)
        if not stop.is_set():
            flush()
            emit(Boundary(None, pipeline.snapshot_filter()))  # the end: close the last segment

    # ------------------------------------------------------------------ writer
    def _write(self, reader, plan, engine, work: WorkDir, report, source, stop, progress, lock):
        typestore = ros2_typestore()
        factory = MessageFactory(typestore)
        node = self.options.settings.node
        labels = getattr(engine, "segmentation_model", None) is not None
        exporter = Exporter(
            work.exports_dir,
            self.options.exports,
            self.options.settings.png_format,
            node.viz,
            model_metadata(node.model.model, node.model.weights),
        )
        bag: OutputBag | None = None
        recorded_scales = [len(report.scales)]  # those in scales.txt already

        def open_segment() -> OutputBag:
            return OutputBag(
                work.segment_path(),
                reader,
                plan.topics,
                self.options.settings.storage,
                labels=labels,
                typestore=typestore,
            )

        def close(next_ns: int | None, filter_state: dict | None) -> None:
            nonlocal bag
            if bag is None:  # an empty segment still gets its (empty) bag
                bag = open_segment()
            bag.close()
            report.messages_copied += bag.counts.pop("copied", 0)
            for topic, count in bag.counts.items():
                report.messages_written[topic] = report.messages_written.get(topic, 0) + count
            for key, count in exporter.counts.items():
                report.export_counts[key] = report.export_counts.get(key, 0) + count
            exporter.counts.clear()
            with lock:
                state = dataclasses.asdict(report)
            scales = state.pop("scales")
            state["scales_count"] = len(scales)
            work.record(next_ns, filter_state or {}, state, scales[recorded_scales[0] :])
            recorded_scales[0] = len(scales)
            bag = None

        for item in _items(source, stop):
            if isinstance(item, Boundary):
                close(item.log_ns, item.filter_state)
                continue
            if bag is None:
                bag = open_segment()
            if isinstance(item, CopyEvent):
                bag.copy(item.connection, item.log_ns, item.raw)
                continue
            event, result = item if isinstance(item, tuple) else (item, None)
            if event.copy:
                bag.copy(event.connection, event.log_ns, event.raw)
            if event.warmup:
                report.warmup_frames += int(result is not None)
                continue
            report.frames_in += 1
            if progress is not None:
                progress(1)
            if result is None:
                report.skip("frame", event.problem or "not processed")
                continue
            for note in event.notes:
                report.skip("LiDAR fit" if "LiDAR" in note else "camera_info", note)
            if result.raw_fit is not None:
                report.fits_tried += 1
                report.fits_ok += int(bool(result.raw_fit.ok))
            if result.scale is not None:
                report.scales.append(float(result.scale))
            camera = plan.topics.cameras[event.camera]
            messages, missing = frame_outputs(
                factory, camera, result, event.header, node.viz, node.cloud.organized
            )
            for topic, msg in messages:
                bag.write(topic, event.log_ns, msg)
            for entry in missing:
                what, _, reason = entry.partition(": ")
                report.skip(what, reason)
            report.frames_out += 1
            exporter.frame(camera, result, event.log_ns)
