"""Transfer progress rendered with rich, on a terminal only."""

from __future__ import annotations

import sys
import threading

from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn


class RichProgress:
    """``ocicore.progress.Progress`` drawn as rich progress bars on stderr when it is a
    terminal; silent otherwise (CI logs get the step lines instead)."""

    def __init__(self) -> None:
        self._enabled = sys.stderr.isatty()
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                              transient=True) if self._enabled else None

    def start(self, key: str, description: str, total: int | None) -> None:
        if self._bars is None:
            return
        with self._lock:
            if not self._tasks:
                self._bars.start()
            self._tasks[key] = self._bars.add_task(description, total=total)

    def advance(self, key: str, amount: int) -> None:
        if self._bars is not None and key in self._tasks:
            self._bars.advance(self._tasks[key], amount)

    def finish(self, key: str, outcome: str) -> None:
        if self._bars is None:
            return
        with self._lock:
            task = self._tasks.pop(key, None)
            if task is not None:
                self._bars.remove_task(task)
            if not self._tasks:
                self._bars.stop()
