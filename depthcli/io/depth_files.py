"""Depth map files: float32 ``.npy``, 16-bit ``.png`` with a scale, and ``.pfm``.

* ``.npy``: float32 values in the dataset's units; 0 = invalid.
* ``.png`` (uint16): ``stored = round(value * depth_scale)``, 0 = invalid; e.g.
  ``depth_scale = 1000`` stores millimetres. Values that do not fit (> 65535
  after scaling) are stored as 0 (invalid) and counted.
* ``.pfm``: float32 (read for evaluation inputs, written for interchange).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from depthcli.depth import sanitize_depth
from depthcli.errors import DepthcliError

DEPTH_SUFFIXES = (".npy", ".png", ".pfm")

#: np.load parses the .npy header with ast.literal_eval, which is not thread-safe on some
#: CPython 3.11 releases ("AST constructor recursion depth mismatch" seen with eval's worker
#: threads on 3.11.7); reads of .npy files are serialised, the scoring stays parallel.
_NPY_LOCK = threading.Lock()


def write_depth_npy(path: Path, depth: np.ndarray) -> None:
    np.save(path, sanitize_depth(depth))


def encode_depth_png16(depth: np.ndarray, depth_scale: float) -> tuple[np.ndarray, int]:
    """uint16 image for ``depth * depth_scale``; returns (image, count of values that overflowed)."""
    d = sanitize_depth(depth).astype(np.float64) * depth_scale
    stored = np.round(d)
    overflow = stored > 65535
    stored[overflow] = 0
    # A valid depth that rounds to 0 would read back as invalid; keep it at 1.
    stored[(d > 0) & (stored == 0) & ~overflow] = 1
    return stored.astype(np.uint16), int(overflow.sum())


def write_depth_png16(path: Path, depth: np.ndarray, depth_scale: float) -> int:
    """Write a 16-bit PNG; returns the number of pixels that did not fit (stored invalid)."""
    import cv2

    img, overflow = encode_depth_png16(depth, depth_scale)
    if not cv2.imwrite(str(path), img):
        from depthcli.errors import raise_if_disk_full

        raise_if_disk_full(path, img.nbytes)  # OpenCV gives no reason
        raise DepthcliError(f"cannot write depth file '{path}'")
    return overflow


def read_png16(path: Path) -> np.ndarray:
    """Raw uint16 values of a 16-bit (or 8-bit) single-channel PNG."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DepthcliError(f"cannot decode depth image '{path}'", "is it a 16-bit PNG?")
    if img.ndim == 3:
        raise DepthcliError(f"depth image '{path}' has {img.shape[2]} channels, expected 1")
    return img


def write_pfm(path: Path, array: np.ndarray) -> None:
    a = np.asarray(array, dtype=np.float32)
    h, w = a.shape
    with open(path, "wb") as fh:
        fh.write(b"Pf\n%d %d\n-1.0\n" % (w, h))
        fh.write(np.ascontiguousarray(np.flipud(a)).astype("<f4").tobytes())


def read_pfm(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        header = fh.readline().strip()
        if header not in (b"Pf", b"PF"):
            raise DepthcliError(f"'{path}' is not a PFM file")
        dims = fh.readline()
        while dims.startswith(b"#"):
            dims = fh.readline()
        m = re.match(rb"^\s*(\d+)\s+(\d+)\s*$", dims)
        if not m:
            raise DepthcliError(f"malformed PFM header in '{path}'")
        w, h = int(m.group(1)), int(m.group(2))
        scale = float(fh.readline().strip())
        channels = 3 if header == b"PF" else 1
        dtype = "<f4" if scale < 0 else ">f4"
        data = np.frombuffer(fh.read(), dtype=dtype)
    if data.size != w * h * channels:
        raise DepthcliError(f"PFM file '{path}' is truncated", "re-export it")
    data = data.reshape(h, w, channels) if channels == 3 else data.reshape(h, w)
    return np.flipud(data).astype(np.float32)


def read_depth_file(path: Path, depth_scale: float | None = None) -> np.ndarray:
    """Depth as float32 (units of the file; 16-bit PNG divided by ``depth_scale``).

    Non-finite values are returned as they are: callers decide whether NaN/Inf is
    an error (stored datasets) or something to count (predictions).
    """
    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"depth file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            with _NPY_LOCK:
                a = np.load(path, allow_pickle=False)
        except Exception as exc:  # corrupted / truncated
            raise DepthcliError(f"cannot read depth file '{path}': {exc}") from None
        if a.ndim == 3 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 2:
            raise DepthcliError(f"depth file '{path}' has shape {a.shape}, expected [H, W]")
        return a.astype(np.float32)
    if suffix == ".png":
        raw = read_png16(path)
        if depth_scale is None:
            raise DepthcliError(f"16-bit depth '{path}' needs a depth scale", "pass the scale (e.g. 1000 for millimetres)")
        return (raw.astype(np.float64) / depth_scale).astype(np.float32)
    if suffix == ".pfm":
        a = read_pfm(path)
        if a.ndim != 2:
            raise DepthcliError(f"depth file '{path}' has 3 channels, expected 1")
        return a
    raise DepthcliError(f"unknown depth file type '{path.suffix}' for '{path}'", "use .npy, .png (16-bit) or .pfm")
