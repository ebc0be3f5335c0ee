"""One Rich console on stderr for logs and progress; results go to stdout.

``progress(...)`` wraps every loop over files or steps. ``report(...)`` prints a
command's summary: a table on stderr-free stdout for people, or JSON with
``--json`` for machines.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

T = TypeVar("T")

#: Logs, warnings and progress bars (stderr, so stdout stays machine-readable).
console = Console(stderr=True, highlight=False)


def log(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


def make_progress(transient: bool = False) -> Progress:
    """A progress bar with a free-text field ``info`` (loss, counts, speed)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=transient,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` under a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as bar:
        task = bar.add_task(description, total=total, info="")
        try:
            for item in items:
                yield item
                bar.advance(task)
        except BaseException:  # an error (or an early stop) in the loop: leave no half bar behind
            bar.live.transient = True
            raise


@contextmanager
def progress_task(description: str, total: int | None) -> Iterator[tuple[Progress, Any]]:
    """``with progress_task("train", steps) as (bar, task): bar.update(task, advance=1, info=...)``."""
    with make_progress() as bar:
        task = bar.add_task(description, total=total, info="")
        try:
            yield bar, task
        except BaseException:  # a failed run prints its error line only
            bar.live.transient = True
            raise


def _jsonable(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"[{len(value)} items]"
    return str(value)


def report(summary: Mapping[str, Any], title: str, as_json: bool = False) -> None:
    """Print a command's summary: a two-column table, or JSON on stdout."""
    if as_json:
        sys.stdout.write(json.dumps(_jsonable(summary), indent=2) + "\n")
        sys.stdout.flush()
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(str(key), _fmt(value))
    Console(highlight=False).print(table)


def print_table(title: str, columns: list[str], rows: list[list[Any]], as_json: bool = False) -> None:
    """Print rows under named columns (or a JSON list of objects)."""
    if as_json:
        sys.stdout.write(json.dumps(_jsonable([dict(zip(columns, r)) for r in rows]), indent=2) + "\n")
        return
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[_fmt(v) for v in r])
    Console(highlight=False).print(table)
