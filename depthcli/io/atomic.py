"""Nothing half-written: outputs are built in a temporary place, then renamed.

``atomic_output_dir`` is for commands that produce a whole folder in one go
(``convert``, ``synth``, ``render``, ``predict``): the folder appears complete or
not at all. ``atomic_write`` is for single files inside a long-running job's
folder (checkpoints, pseudo-labels), where the job itself is resumable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from depthcli.errors import DepthcliError


#: Written into every folder depthcli creates, so ``--overwrite`` can tell a
#: previous depthcli output from a folder it must never delete.
MARKER = ".depthcli"


def ensure_replaceable(out: Path, markers: tuple[str, ...] = ()) -> None:
    """Refuse to delete ``out`` unless it is empty or looks like a depthcli output.

    A folder counts as depthcli's if it holds :data:`MARKER`, ``dataset.json``,
    or one of ``markers`` (e.g. ``job.json`` of a training job). This keeps
    ``--overwrite`` with a mistyped path from deleting a user's folder.
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise DepthcliError(f"output '{out}' exists and is not a folder", "choose another output path")
    if not any(out.iterdir()):
        return
    if any((out / m).exists() for m in (MARKER, "dataset.json", *markers)):
        return
    raise DepthcliError(
        f"'{out}' is not a folder depthcli created; refusing to replace it", "choose another output folder"
    )


def mark_output(folder: Path, what: str) -> None:
    """Write :data:`MARKER` into a folder depthcli creates."""
    import json

    from depthcli import __version__

    (Path(folder) / MARKER).write_text(json.dumps({"created_by": f"depthcli {__version__}", "what": what}) + "\n")


def check_output_dir(out: Path, overwrite: bool, markers: tuple[str, ...] = ()) -> None:
    """Refuse an existing output without ``overwrite`` (or one depthcli did not
    create, even with it), and an unwritable parent."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise DepthcliError(
            f"output '{out}' already exists",
            "pass --overwrite to replace it, or choose another output folder",
        )
    ensure_replaceable(out, markers)
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DepthcliError(f"cannot create '{parent}': {exc.strerror}", "choose a writable output folder") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DepthcliError(f"cannot write to '{parent}'", "choose a writable output folder")


@contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; rename it to ``out`` on success.

    On any exception the temporary folder is removed and ``out`` is untouched.
    """
    out = Path(out)
    check_output_dir(out, overwrite)
    parent = out.absolute().parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as exc:
        raise DepthcliError(f"cannot write to '{parent}': {exc.strerror}", "choose a writable output folder") from None
    try:
        yield tmp
        mark_output(tmp, "output")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path`` (same folder).

    A reader never sees a partial ``path``: it is either the old file, absent,
    or the complete new one (``os.replace`` is atomic on POSIX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            from depthcli.errors import disk_full, raise_if_disk_full

            if disk_full(exc) is None:
                raise_if_disk_full(path, written)  # writers such as torch.save fail without an errno
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))
