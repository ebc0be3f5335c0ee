"""Nothing half-written, nothing of the user's ever replaced.

``atomic_output_dir`` is for commands that produce a whole folder in one go
(``convert``, ``synth``, ``render``, ``predict``, ``eval --report``): the folder
appears complete or not at all. ``job_output_dir`` is for long, resumable jobs
(``splat-train``, ``train``, ``distill``) that write into their folder as they
go. ``atomic_write`` is for single files inside a job's folder (checkpoints,
pseudo-labels).

The rules every output follows:

* Every folder depthcli creates holds :data:`MARKER` (the command and the
  depthcli version). ``--overwrite`` replaces and ``--resume`` continues only
  a folder holding it (or an empty one); a file name such as ``dataset.json``
  proves nothing.
* Inputs and outputs never contain each other (:func:`check_no_overlap`).
* One run at a time per output: :func:`output_lock` holds an exclusive
  ``flock`` on ``.OUT.lock`` beside ``OUT`` for the whole run. The kernel
  releases it when the process dies (even ``kill -9``), so a later run can
  tell a dead run's hidden ``.OUT.partial-*`` folders from a live one's and
  removes them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from depthcli.errors import DepthcliError


#: Written into every folder depthcli creates, so ``--overwrite`` can tell a
#: previous depthcli output from a folder it must never delete.
MARKER = ".depthcli"


def _abs(path: Path | str) -> Path:
    """Absolute path with ``.``/``..`` folded (``Path('.').name`` is empty), links kept."""
    return Path(os.path.abspath(os.fspath(path)))


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a folder depthcli created, or None (no marker or not ours)."""
    p = Path(folder) / MARKER
    if p.is_symlink() or not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not str(data.get("created_by", "")).startswith("depthcli"):
        return None
    return data


def ensure_replaceable(out: Path, markers: tuple[str, ...] = ()) -> None:
    """Refuse to delete ``out`` unless it is empty or holds :data:`MARKER`.

    Only the marker counts: a folder that merely contains ``dataset.json``,
    ``job.json`` or a ``model/`` folder may be the user's own. ``markers`` is
    accepted for backward compatibility and ignored.
    """
    out = Path(out)
    if out.is_symlink():
        raise DepthcliError(f"output '{out}' is a symbolic link; refusing to replace it", "choose another output folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise DepthcliError(f"output '{out}' exists and is not a folder", "choose another output path")
    if not any(out.iterdir()):
        return
    if read_marker(out) is not None:
        return
    raise DepthcliError(
        f"'{out}' is not a folder depthcli created (no {MARKER} marker); refusing to replace it",
        "choose another output folder",
    )


def _command_name(default: str) -> str:
    """The running depthcli subcommand (e.g. ``synth``) when called from the CLI, else ``default``."""
    import importlib

    # Typer runs commands under click's context (its own vendored copy in recent versions).
    for module in ("typer._click.globals", "click.globals"):
        try:
            ctx = importlib.import_module(module).get_current_context(silent=True)
        except (ImportError, AttributeError):  # pragma: no cover - depends on the typer version
            continue
        if ctx is not None and getattr(ctx, "info_name", None):
            return str(ctx.info_name)
    return default


def mark_output(folder: Path, what: str) -> None:
    """Write :data:`MARKER` (``what`` = the command, and the version) into a folder depthcli creates.

    ``what="output"`` (the generic default) is replaced by the running CLI subcommand.
    """
    from depthcli import __version__

    if what == "output":
        what = _command_name(what)

    (Path(folder) / MARKER).write_text(
        json.dumps({"created_by": f"depthcli {__version__}", "what": what, "version": __version__}) + "\n"
    )


def check_no_overlap(inputs: Iterable[Path | str | None], outputs: Iterable[Path | str | None]) -> None:
    """Refuse when an output is an input, lies inside one, or contains one.

    Paths are compared after resolving symbolic links; None entries are
    skipped. Every command calls this before it writes anything.
    """
    ins = [(Path(p), Path(p).resolve()) for p in inputs if p is not None]
    for o in outputs:
        if o is None:
            continue
        ro = Path(o).resolve()
        for i, ri in ins:
            if ro == ri:
                rel = "is"
            elif ri in ro.parents:
                rel = "is inside"
            elif ro in ri.parents:
                rel = "contains"
            else:
                continue
            raise DepthcliError(
                f"output '{o}' {rel} the input '{i}'",
                "inputs are never modified: choose an output outside every input",
            )


def check_output_dir(
    out: Path, overwrite: bool, markers: tuple[str, ...] = (), inputs: Iterable[Path | str | None] = ()
) -> None:
    """Refuse an existing output without ``overwrite`` (or one depthcli did not
    create, even with it), an output overlapping ``inputs`` or the current
    folder, and an unwritable parent."""
    out = Path(out)
    check_no_overlap(inputs, [out])
    if _abs(out) == _abs(Path.cwd()) or _abs(out) in _abs(Path.cwd()).parents:
        raise DepthcliError(f"output '{out}' is the current folder or contains it", "choose another output folder")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise DepthcliError(
            f"output '{out}' already exists",
            "pass --overwrite to replace it, or choose another output folder",
        )
    ensure_replaceable(out, markers)
    parent = _abs(out).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DepthcliError(f"cannot create '{parent}': {exc.strerror}", "choose a writable output folder") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DepthcliError(f"cannot write to '{parent}'", "choose a writable output folder")


# ----------------------------------------------------------------------------- one run per output


def _lock_path(out: Path) -> Path:
    out = _abs(out)
    return out.parent / f".{out.name}.lock"


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for the block; refuse if another run holds it.

    The lock is ``flock`` on ``.OUT.lock`` beside ``OUT``: the kernel drops it
    when its process dies, so a killed run never blocks a later one. The file is
    removed on exit by its holder only.
    """
    import fcntl

    path = _lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DepthcliError(f"cannot create '{path.parent}': {exc.strerror}", "choose a writable output folder") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise DepthcliError(f"cannot write to '{path.parent}': {exc.strerror}", "choose a writable output folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                try:
                    holder = json.loads(path.read_text() or "{}").get("pid", "?")
                except (OSError, ValueError, AttributeError):
                    holder = "?"
                raise DepthcliError(
                    f"another depthcli run (pid {holder}) is writing '{out}'",
                    "wait for it to finish or choose another output folder",
                ) from None
            raise DepthcliError(f"cannot lock '{path}': {exc.strerror}") from None
        # The holder before us may have removed the file between our open and our
        # lock: then we hold a lock on a deleted file; start again.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid()}).encode())
        _remove_stale(out)
        yield
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)


def _remove_stale(out: Path) -> None:
    """Remove the hidden work folders of ``out`` left by killed runs (call with the lock held).

    Only folders named ``.OUT.partial-*`` / ``.OUT.old-*`` that carry
    depthcli's marker are removed; with the lock held, no live run owns them.
    """
    out = _abs(out)
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    for p in entries:
        name = p.name
        if not (name.startswith(f".{out.name}.partial-") or name.startswith(f".{out.name}.old-")):
            continue
        if p.is_symlink() or not p.is_dir():
            continue
        owned = read_marker(p) is not None or (p / "x").is_dir() and read_marker(p / "x") is not None
        if owned:
            shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------- whole-folder outputs


@contextmanager
def atomic_output_dir(
    out: Path, overwrite: bool = False, *, what: str = "output", inputs: Iterable[Path | str | None] = ()
) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; rename it to ``out`` on success.

    On any exception the temporary folder is removed and ``out`` is untouched.
    ``what`` (the command) goes into the marker; ``inputs`` must not overlap
    ``out``. A second run into the same ``out`` while this one works is refused;
    an ``out`` that appears meanwhile (without ``overwrite``) is never replaced.
    """
    out = Path(out)
    inputs = list(inputs)
    check_output_dir(out, overwrite, inputs=inputs)
    with output_lock(out):
        check_output_dir(out, overwrite, inputs=inputs)  # again, now that no other run can change it
        parent = _abs(out).parent
        name = _abs(out).name
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent))
            mark_output(tmp, what)  # from the start: a later run may remove it if this one is killed
        except OSError as exc:
            raise DepthcliError(f"cannot write to '{parent}': {exc.strerror}", "choose a writable output folder") from None
        try:
            yield tmp
            mark_output(tmp, what)
            _publish(tmp, out, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``out``; replace an existing ``out`` only with ``overwrite`` (and its marker)."""
    parent = _abs(out).parent
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise DepthcliError(f"output '{out}' appeared while this run was writing it; it was left as it is",
                                "choose another output folder")
        ensure_replaceable(out)
        old = Path(tempfile.mkdtemp(prefix=f".{_abs(out).name}.old-", dir=parent))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        # rename() replaces only an empty folder; ours is never empty (marker).
        os.rename(tmp, out)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            raise DepthcliError(f"output '{out}' appeared while this run was writing it; it was left as it is",
                                "choose another output folder") from None
        raise


# ----------------------------------------------------------------------------- job folders


def check_resumable(out: Path, what: str) -> dict[str, Any]:
    """Refuse ``--resume`` into a folder that is not a depthcli ``what`` job; return its marker."""
    out = Path(out)
    if not out.is_dir():
        raise DepthcliError(f"--resume: no checkpoint in '{out}' (the folder does not exist)", "start without --resume")
    marker = read_marker(out)
    if marker is None:
        raise DepthcliError(
            f"--resume: '{out}' is not a folder depthcli created (no {MARKER} marker); refusing to write into it",
            "choose another output folder",
        )
    if marker.get("what") != what:
        raise DepthcliError(f"--resume: '{out}' was created by depthcli {marker.get('what')}, not {what}",
                            "resume with the command that created it")
    return marker


@contextmanager
def job_output_dir(
    out: Path,
    what: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    inputs: Iterable[Path | str | None] = (),
    keep: Callable[[Path], bool] = lambda out: False,
) -> Iterator[Path]:
    """The folder of a resumable job, locked for the block.

    ``resume``: ``out`` must be a depthcli ``what`` job (marker); it is used as
    is. Otherwise ``out`` must be new, empty, or (with ``overwrite``) a depthcli
    output, which is replaced; the fresh folder gets the marker. If the block
    fails in a fresh folder and ``keep(out)`` is false (e.g. no checkpoint
    yet), the folder is removed: a refused or failed run leaves nothing behind.
    """
    out = Path(out)
    inputs = list(inputs)
    check_no_overlap(inputs, [out])
    if resume:
        check_resumable(out, what)
    else:
        check_output_dir(out, overwrite, inputs=inputs)
    with output_lock(out):
        if resume:
            check_resumable(out, what)
            yield out
            return
        check_output_dir(out, overwrite, inputs=inputs)
        if out.exists():
            shutil.rmtree(out)
        try:
            out.mkdir(parents=True)
            mark_output(out, what)
        except OSError as exc:
            shutil.rmtree(out, ignore_errors=True)
            raise DepthcliError(f"cannot create '{out}': {exc.strerror}", "choose a writable output folder") from None
        try:
            yield out
        except BaseException:
            try:
                resumable = keep(out)
            except Exception:  # noqa: BLE001 - unsure: keep the folder
                resumable = True
            if not resumable:
                shutil.rmtree(out, ignore_errors=True)
            raise


# ----------------------------------------------------------------------------- single files


def atomic_write(path: Path, write: Callable[[Path], None], replace: bool = True) -> None:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path`` (same folder).

    A reader never sees a partial ``path``: it is either the old file, absent,
    or the complete new one (``os.replace`` is atomic on POSIX). With
    ``replace=False`` a ``path`` that exists by then (e.g. written by a
    concurrent run) is never replaced: the write is refused instead.
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
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists: never replaces
            except FileExistsError:
                raise DepthcliError(f"'{path}' already exists (written meanwhile by another run?); it was left as it is",
                                    "pass --overwrite to replace it, or choose another path") from None
            except OSError:  # a file system without hard links: check, then rename
                if path.exists() or path.is_symlink():
                    raise DepthcliError(f"'{path}' already exists (written meanwhile by another run?); it was left as it is",
                                        "pass --overwrite to replace it, or choose another path") from None
                os.replace(tmp, path)
            tmp.unlink(missing_ok=True)
    except BaseException as exc:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            from depthcli.errors import disk_full, raise_if_disk_full

            if disk_full(exc) is None:
                raise_if_disk_full(path, written)  # writers such as torch.save fail without an errno
        raise


def atomic_write_text(path: Path, text: str, replace: bool = True) -> None:
    if replace:
        atomic_write(path, lambda p: p.write_text(text))
    else:
        atomic_write(path, lambda p: p.write_text(text), replace=False)
