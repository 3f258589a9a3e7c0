"""Progress bars for long commands: shown on a terminal, silent in CI logs and pipes (tqdm's own TTY check)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def enabled() -> bool:
    """False in CI (CI=true) and when stderr is not a terminal."""
    return not os.environ.get("CI") and os.isatty(2)


def progress(items: Iterable[T], description: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    yield from tqdm(items, desc=description, total=total, unit=unit, disable=not enabled(), leave=False)


def bar(description: str, total: int | None = None, unit: str = "it", **options: object) -> tqdm:
    """A bar to ``update()`` by hand (bytes of a download, say)."""
    return tqdm(desc=description, total=total, unit=unit, disable=not enabled(), leave=False, **options)
