"""What one process keeps in memory between calls: one policy for every in-process memo of the package.

A :class:`Memo` holds values built by a function, under a key that names everything the value depends on
(never more: a key that holds the whole profile misses on every unrelated change; never less: that would
hand back a stale value).  It forgets the least recently used value first when it holds more than
``max_entries`` values (making room before it builds a new one) or more than ``max_bytes`` (``size_of`` measures a value; a value larger than the
budget is handed back without being kept).  Values are shared between callers: treat them as read-only.

Every memo registers itself, and :func:`forget_all` empties them all: the tests call it around each test
(``tests/conftest.py``), as may a process that changes its data or its weights.

The package's memos: the decoded image sets and the split content digests (:mod:`kx_utils.data.datasets`),
the Section 4 sets (:mod:`kx_utils.experiments.detection_sets`), the frozen pretrained backbones
(:mod:`kx_utils.core.detectors.binary`) and the fitted Mahalanobis Gaussians
(:mod:`kx_utils.experiments.detection`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")

_MEMOS: list["Memo"] = []


class Memo(Generic[V]):
    """An in-process, least-recently-used memo, bounded by entries and/or bytes (both optional)."""

    def __init__(self, name: str, *, max_entries: int | None = None,
                 max_bytes: int | Callable[[], int] | None = None, size_of: Callable[[V], int] | None = None):
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"memo {name!r}: max_entries must be 1 or more (or None), got {max_entries}")
        if max_bytes is not None and size_of is None:
            raise ValueError(f"memo {name!r}: a byte budget needs size_of, the size of a value")
        self.name, self.max_entries, self.max_bytes, self.size_of = name, max_entries, max_bytes, size_of
        self._values: "OrderedDict[Hashable, V]" = OrderedDict()
        _MEMOS.append(self)

    def __repr__(self) -> str:
        return f"Memo({self.name!r}, {len(self)} held)"

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._values

    def _budget(self) -> int | None:
        return self.max_bytes() if callable(self.max_bytes) else self.max_bytes

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        """The value held for ``key``, or ``build()``'s, kept while it fits the bounds."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        self._trim(self.max_entries - 1 if self.max_entries is not None else None)  # room first: a big value
        value = build()                                                             # is not built beside one more
        budget = self._budget()
        if budget is not None and self.size_of(value) > budget:
            return value  # larger than the whole budget: handed back, not kept
        self._values[key] = value
        self._trim(self.max_entries)
        while budget is not None and sum(self.size_of(v) for v in self._values.values()) > budget:
            self._values.popitem(last=False)
        return value

    def _trim(self, entries: int | None) -> None:
        while entries is not None and len(self._values) > entries:
            self._values.popitem(last=False)

    def forget(self) -> None:
        """Drop every value held."""
        self._values.clear()


def forget_all() -> None:
    """Empty every memo of the process."""
    for memo in _MEMOS:
        memo.forget()
