"""The one exception type for problems the user can fix.

Library code raises :class:`DepthcliError` for bad input (a missing file, a
malformed model, an output folder that already exists, ...). The CLI's error
boundary (:func:`depthcli.cli.main`) turns it into one red line on stderr with
the hint, and exit code 1. Internal invariants use ``assert`` instead.
"""

from __future__ import annotations


class DepthcliError(Exception):
    """A user-facing error: ``message`` says what is wrong, ``hint`` what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message} ({self.hint})"


def disk_full(exc: BaseException) -> str | None:
    """The file being written when the disk (or quota) filled up: ``""`` when unknown,
    None when ``exc`` is not about a full disk. Looks through the exception chain
    (libraries re-raise ENOSPC as their own errors, e.g. torch's RuntimeError)."""
    import errno
    import re

    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return str(cur.filename or "")
        text = str(cur)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return ""
        if isinstance(cur, OSError) and re.search(r"\d+ requested and \d+ written", text):
            return ""  # numpy's short write (np.save / tofile) on a full disk carries no errno
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return None


def after_disk_full(exc: BaseException, out, command: str) -> None:
    """Called by a resumable job (splat-train, train) that failed. When the disk filled
    up and the job folder is still there (it holds a checkpoint; a fresh folder without
    one is removed by :func:`depthcli.io.atomic.job_output_dir`), say how to continue.
    Otherwise return: the caller re-raises and the CLI boundary reports it."""
    from pathlib import Path

    where = disk_full(exc)
    if where is None or not Path(out).is_dir():
        return
    what = f"'{where}'" if where else f"the job folder '{out}'"
    raise DepthcliError(f"disk full while writing {what}",
                        f"free space, then continue with depthcli {command} ... --resume") from exc


def raise_if_disk_full(path, nbytes: int) -> None:
    """After a writer that gives no reason failed (OpenCV's ``imwrite`` returns False):
    raise ENOSPC when the disk holding ``path`` has less room than ~``nbytes`` left."""
    import errno
    import shutil
    from pathlib import Path

    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        return
    if free < 4 * int(nbytes) + (1 << 20):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
