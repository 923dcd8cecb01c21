"""Progress bars for the ``thce`` command line: the library reports ``progress(description, done, total)``
(:data:`thce.progress.ProgressFn`), the CLI draws it."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressBars:
    """Turns the library's ``progress(description, done, total)`` calls into one tqdm bar at a time
    (silent when stderr is not a terminal)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.desc = ""

    def __call__(self, desc: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None or desc != self.desc:
            self.close()
            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr, disable=None)
            self.desc = desc
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
