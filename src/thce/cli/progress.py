"""Progress bars for the ``thce`` command line: the library reports ``progress(description, done, total)``
(:data:`thce.progress.ProgressFn`), the CLI draws it."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressBars:
    """Turns the library's ``progress(description, done, total)`` calls into one tqdm bar at a time
    (silent when stderr is not a terminal)."""

    def __init__(self, enabled: bool = True, *, position: int | None = None, prefix: str = "") -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.desc = ""
        self.position, self.prefix = position, prefix
        self.lanes: dict[str, ProgressBars] = {}

    def lane(self, name: str) -> ProgressBars:
        """The bars of the reporter ``name`` (a worker process of ``thce experiment --jobs``), drawn on a line of
        their own below this one's (:func:`thce.workers.lane`)."""
        if name not in self.lanes:
            self.lanes[name] = ProgressBars(self.enabled, position=len(self.lanes) + 1, prefix=f"{name}: ")
        return self.lanes[name]

    def __call__(self, desc: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None or desc != self.desc:
            self._close_bar()
            self.bar = tqdm(total=total, desc=self.prefix + desc, leave=False, dynamic_ncols=True, file=sys.stderr,
                            disable=None, position=self.position)  # fmt: skip
            self.desc = desc
        self.bar.update(done - self.bar.n)
        if done >= total:
            self._close_bar()

    def close(self) -> None:
        """Close every bar, the lanes' too."""
        for lane in self.lanes.values():
            lane.close()
        self._close_bar()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
