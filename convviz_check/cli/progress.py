"""A progress display for long command-line steps: on a terminal, a rich progress bar
(or a plain counter when rich is not installed); off a terminal, nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Progress:
    """A progress display on stdout when it is a terminal (rich if installed), else
    silent. ``step(label, total)`` yields an ``update(done, total)`` callable."""

    def __init__(self, enabled: bool) -> None:
        self._rich: Any = None
        self._plain = False
        if not enabled:
            return
        try:
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )
        except ImportError:
            self._plain = True
            return
        self._rich = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            transient=True,
        )
        self._rich.start()

    @contextmanager
    def step(self, label: str, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
        if self._rich is not None:
            task = self._rich.add_task(label, total=total, count="")

            def update(done: int, count: int) -> None:
                self._rich.update(task, completed=done, total=count, count=f"{done}/{count}")

            try:
                yield update
            finally:
                self._rich.remove_task(task)
            return
        if self._plain:
            print(f"{label} ...", end="\r", flush=True)

            def plain(done: int, count: int) -> None:
                print(f"{label} {done}/{count}", end="\r", flush=True)

            yield plain
            print(" " * (len(label) + 20), end="\r", flush=True)
            return
        yield lambda done, count: None

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
