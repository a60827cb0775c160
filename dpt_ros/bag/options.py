"""What a bag job does: the node's settings plus the bag tool's own choices."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpt_ros.bag.errors import BagInputError
from dpt_ros.bag.exports import EXPORTS
from dpt_ros.config import (
    BagSettings,
    ConfigError,
    load_settings,
    settings_from_mapping,
    settings_to_parameters,
)


@dataclass(frozen=True)
class BagOptions:
    """Settings (``dpt_ros.config.BagSettings``: the node's parameters + storage, png_format,
    batch_size), topic choices (empty / None = automatic; ``lidar_topic`` "" = no LiDAR),
    exports (any of ``EXPORTS``), ``skip_bad`` (go on past unreadable messages) and
    ``segment_frames`` (images per resumable segment of the output)."""

    settings: BagSettings = field(default_factory=BagSettings)
    image_topics: tuple[str, ...] = ()
    camera_info_topics: tuple[str, ...] = ()
    lidar_topic: str | None = None
    exports: frozenset[str] = frozenset()
    skip_bad: bool = False
    segment_frames: int = 50

    def __post_init__(self) -> None:
        unknown = sorted(set(self.exports) - set(EXPORTS))
        if unknown:
            raise BagInputError(f"unknown --export {unknown}; choose from {', '.join(EXPORTS)}")
        if self.segment_frames < 1:
            raise BagInputError(f"segment_frames must be >= 1, got {self.segment_frames}")

    @classmethod
    def from_config(
        cls, path: str | Path | None, overrides: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> BagOptions:
        """Options whose settings come from a node parameter file (None: the defaults) with
        ``overrides`` (flat node parameter names); ConfigError becomes BagInputError."""
        try:
            if path is None:
                settings = settings_from_mapping(dict(overrides or {}), BagSettings)
            else:
                settings = load_settings(path, BagSettings, overrides=overrides)
        except ConfigError as error:
            raise BagInputError(str(error)) from None
        return cls(settings=settings, **kwargs)

    def fingerprint(self) -> str:
        """A hash of everything that changes the output (the resume journal checks it)."""
        values = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in settings_to_parameters(self.settings).items()
        }
        values.update(
            image_topics=list(self.image_topics),
            camera_info_topics=list(self.camera_info_topics),
            lidar_topic=self.lidar_topic,
            exports=sorted(self.exports),
        )
        text = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
