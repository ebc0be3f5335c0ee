"""The acceptance shape of a refused run, shared by the hostile-input tests.

A bad input, a hostile file or a forbidden output must end with: a non-zero
exit, exactly one line of output (the error, no traceback), no output left
behind (not even a hidden ``.OUT.partial-*`` folder) and every input file
byte-identical. Use it with the ``run_cli`` fixture of ``conftest.py``::

    from hostile import assert_refused, tiny_dataset

    def test_x(tmp_path, run_cli):
        ds = tiny_dataset(tmp_path / "ds")
        assert_refused(run_cli, ["render", ply, ds, ds], inputs=[ds, ply], match="inside")
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def file_hashes(*roots: Path | str) -> dict[str, str]:
    """``{path: sha256}`` of every file under ``roots`` (a link: its target text).

    Folders are listed too (value ``"dir"``), so a file or folder appearing
    or vanishing shows as a difference.
    """
    out: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        if root.is_symlink():
            out[str(root)] = "link:" + os.readlink(root)
            continue
        if root.is_file():
            out[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        if not root.exists():
            out[str(root)] = "absent"
            continue
        out[str(root)] = "dir"
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if p.is_symlink():
                    out[str(p)] = "link:" + os.readlink(p)
                elif p.is_dir():
                    out[str(p)] = "dir"
                else:
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(out: Path | str) -> list[Path]:
    """Hidden work folders/files of ``out`` that a run left beside it."""
    out = Path(out)
    parent = out.absolute().parent
    if not parent.is_dir():
        return []
    pat = re.compile(rf"^\.{re.escape(out.name)}\.(partial|old|lock)")
    return sorted(p for p in parent.iterdir() if pat.match(p.name))


def assert_one_line_error(code: int, stdout: str, stderr: str, match: str | None = None) -> str:
    """Non-zero exit, one line of output in all, no traceback; return that line."""
    lines = [ln for ln in (stdout + stderr).splitlines() if ln.strip()]
    assert code != 0, f"exit code 0; output: {stdout + stderr!r}"
    assert "Traceback" not in stdout + stderr, stdout + stderr
    assert len(lines) == 1, f"expected one line of output, got {len(lines)}: {lines!r}"
    if match is not None:
        assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    return lines[0]


def assert_refused(
    run: Callable[..., tuple[int, str, str]],
    args: Sequence[object],
    *,
    inputs: Iterable[Path | str] = (),
    absent: Iterable[Path | str] = (),
    unchanged: Iterable[Path | str] = (),
    match: str | None = None,
) -> str:
    """Run ``depthcli ARGS`` with ``run`` (e.g. the ``run_cli`` fixture) and check a clean refusal.

    ``inputs`` and ``unchanged``: files/folders that must be byte-identical
    afterwards; ``absent``: outputs that must not exist afterwards (nor any
    hidden ``.NAME.partial-*``/``.NAME.old-*``/``.NAME.lock`` beside them).
    Returns the error line.
    """
    keep = [Path(p) for p in (*inputs, *unchanged)]
    before = file_hashes(*keep)
    code, stdout, stderr = run(*[str(a) for a in args])
    line = assert_one_line_error(code, stdout, stderr, match)
    after = file_hashes(*keep)
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, f"inputs changed: {changed[:6]}"
    for out in absent:
        out = Path(out)
        assert not out.exists() and not out.is_symlink(), f"output '{out}' was left behind"
        assert not leftovers(out), f"hidden leftovers: {leftovers(out)}"
    return line


def run_subprocess(args: Sequence[object], cwd: Path | str | None = None, timeout: float = 300,
                   env: dict | None = None) -> subprocess.CompletedProcess:
    """``depthcli ARGS`` in a fresh Python process (this checkout first on the path)."""
    e = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.pop("DEPTHCLI_DEBUG", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "depthcli", *[str(a) for a in args]], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


def tiny_dataset(out: Path, frames: int = 4, h: int = 12, w: int = 16, images: bool = True, seed: int = 0) -> Path:
    """A small valid dataset (metres, z-depth, a plane at 2-3 m seen from shifted cameras)."""
    from depthcli.io.atomic import atomic_output_dir
    from depthcli.io.dataset import DatasetWriter

    rng = np.random.default_rng(seed)
    K = np.array([[w * 0.9, 0, w / 2], [0, w * 0.9, h / 2], [0, 0, 1.0]])
    with atomic_output_dir(Path(out)) as tmp:
        wr = DatasetWriter(tmp, depth_units="m", source={"kind": "test"})
        for i in range(frames):
            depth = (2.0 + 0.1 * i + np.linspace(0, 1, w)[None, :] * np.ones((h, 1))).astype(np.float32)
            pose = np.eye(4)
            pose[0, 3] = 0.05 * i
            img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) if images else None
            wr.add_frame(f"f{i:02d}", depth, K, pose, image=img)
        wr.close()
    return Path(out)
