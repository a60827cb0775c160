"""A bounded least-recently-used cache of captured CUDA graphs, and when to capture.

Device-free bookkeeping (the engine does the capturing): a graph for a key (model kind, input
shape, precision) is captured only once that key has been seen ``capture_after`` times, so a
one-off input size runs eagerly and never pays for a capture; a camera's fixed size is
captured on its ``capture_after + 1``-th frame. Captured graphs are kept up to ``max_graphs``
of them and ``max_bytes`` of device memory together; the least recently used leave first. A
graph larger than ``max_bytes`` on its own is not kept, and its key is not captured again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

__all__ = ["GraphCache"]


@dataclass
class _Entry:
    graph: Any
    nbytes: int


class GraphCache:
    """LRU cache of graphs by key, bounded in count and bytes.

    ``put`` returns what it evicted; the caller must make sure the device no longer runs those
    graphs before it drops the last reference (their memory pools are freed with them).
    """

    def __init__(
        self, max_graphs: int, max_bytes: int, capture_after: int = 2, max_tracked: int = 64
    ) -> None:
        if max_graphs < 0 or max_bytes < 0 or capture_after < 0 or max_tracked < 1:
            raise ValueError(
                "max_graphs, max_bytes and capture_after must be >= 0 and max_tracked >= 1, got "
                f"{max_graphs}, {max_bytes}, {capture_after}, {max_tracked}"
            )
        self.max_graphs = max_graphs
        self.max_bytes = max_bytes
        self.capture_after = capture_after
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        # Sightings of keys without a graph (bounded: the oldest forgotten first).
        self._seen: OrderedDict[Hashable, int] = OrderedDict()
        self._max_tracked = max_tracked
        self._too_big: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        """Device bytes held by the cached graphs together."""
        return sum(entry.nbytes for entry in self._entries.values())

    def keys(self) -> list[Hashable]:
        """Cached keys, least recently used first."""
        return list(self._entries)

    def get(self, key: Hashable) -> Any | None:
        """The graph for `key` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.graph

    def should_capture(self, key: Hashable) -> bool:
        """Count one frame of `key` without a graph; True once it is to be captured."""
        if self.max_graphs == 0 or key in self._too_big:
            return False
        count = self._seen.pop(key, 0) + 1
        self._seen[key] = count
        while len(self._seen) > self._max_tracked:
            self._seen.popitem(last=False)
        return count > self.capture_after

    def put(self, key: Hashable, graph: Any, nbytes: int) -> list[Any]:
        """Keep `graph` (`nbytes` of device memory) for `key`; returns the evicted graphs
        (`graph` itself when it alone exceeds ``max_bytes``)."""
        self._seen.pop(key, None)
        evicted = [self._entries.pop(key).graph] if key in self._entries else []
        if nbytes > self.max_bytes or self.max_graphs == 0:
            self._too_big.add(key)
            return [*evicted, graph]
        self._entries[key] = _Entry(graph, max(int(nbytes), 0))
        while len(self._entries) > self.max_graphs or self.nbytes > self.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            evicted.append(oldest.graph)
        return evicted

    def drop(self, predicate: Callable[[Hashable], bool]) -> list[Any]:
        """Remove the graphs whose key satisfies `predicate`; returns them."""
        keys = [key for key in self._entries if predicate(key)]
        return [self._entries.pop(key).graph for key in keys]

    def clear(self) -> list[Any]:
        """Remove everything; returns the graphs."""
        graphs = [entry.graph for entry in self._entries.values()]
        self._entries.clear()
        self._seen.clear()
        self._too_big.clear()
        return graphs
