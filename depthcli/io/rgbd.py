"""RGB-D file formats: raw depth images and their encodings, TUM lists and poses, K and pose text files.

Only decoding lives here; planning frames of a capture and writing the
dataset is :mod:`depthcli.convert.rgbd`. Every decoder returns **z-depth in
metres** with **0 = invalid**: each format's own invalid markers (0, 65535, the
Kinect's raw 2047, values that decode to a non-positive depth) become 0.

Depth encodings of raw integer depth images (``--depth-encoding``):

* ``linear``: metres = raw / scale.
* ``nyu-raw``: raw NYU Kinect disparity: byte-swap the uint16 as read, then
  metres = 351.3 / (1092.5 - raw) (raw 2047 = no measurement).
* ``sun``: SUN RGB-D bit-rotated millimetres: metres =
  (((d >> 3) | (d << 13)) & 0xFFFF) / 1000, with d widened to uint32.

TUM lists: lines ``timestamp field ...``; ``groundtruth.txt`` holds ``timestamp
tx ty tz qx qy qz qw`` = **world_from_cam**.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depthcli.errors import DepthcliError

DEPTH_ENCODINGS = ("linear", "nyu-raw", "sun")

#: TUM's associate.py default: colour, depth and pose timestamps at most this far apart (s).
TUM_MAX_DIFFERENCE = 0.02
#: NYU Kinect raw disparity -> metres: 351.3 / (1092.5 - raw).
NYU_RAW_A, NYU_RAW_B = 351.3, 1092.5
NYU_RAW_INVALID = 2047

DEPTH_RAW_SUFFIXES = (".png", ".pgm", ".tif", ".tiff")
DEPTH_FLOAT_SUFFIXES = (".npy", ".pfm")


# --------------------------------------------------------------------------- decoding


def read_raw_depth(path: Path) -> np.ndarray:
    """Depth file as stored: integer images as their raw values (uint16/uint8),
    ``.npy`` / ``.pfm`` as float32. PGM/PNG are decoded by OpenCV (PGM big-endian,
    as its specification says)."""
    from depthcli.io.depth_files import read_depth_file, read_png16

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DEPTH_FLOAT_SUFFIXES:
        return read_depth_file(path)
    if suffix in DEPTH_RAW_SUFFIXES:
        if not path.is_file():
            raise DepthcliError(f"depth file '{path}' does not exist")
        raw = read_png16(path)
        if raw.dtype == np.uint8:
            raise DepthcliError(
                f"depth image '{path}' is 8-bit: 256 levels cannot hold depth",
                "depth must be a 16-bit image or float (.npy, .pfm); an 8-bit file is usually a preview",
            )
        if raw.dtype.kind not in "ui":
            return raw.astype(np.float32)
        return raw
    raise DepthcliError(f"unsupported depth file '{path.name}'", f"use one of {', '.join(DEPTH_RAW_SUFFIXES + DEPTH_FLOAT_SUFFIXES)}")


def decode_depth(raw: np.ndarray, encoding: str = "linear", raw_scale: float | None = None) -> np.ndarray:
    """Raw depth image -> float32 z-depth in metres, 0 = invalid.

    ``linear``: ``raw / raw_scale`` (float input with ``raw_scale`` None is taken
    as metres). ``nyu-raw``: byte-swap, then ``351.3 / (1092.5 - raw)``.
    ``sun``: bit-rotate by 3 then ``/ (raw_scale or 1000)``. Non-finite and
    non-positive results are invalid (0).
    """
    from depthcli.depth import sanitize_depth

    raw = np.asarray(raw)
    if encoding == "linear":
        if raw.dtype.kind == "f":
            out = raw.astype(np.float64) / (raw_scale or 1.0)
        else:
            if raw_scale is None:
                raise DepthcliError("integer depth images need a scale", "pass --input-depth-scale (raw / scale = metres, e.g. 1000 for millimetres)")
            out = raw.astype(np.float64) / raw_scale
            if raw.dtype == np.uint16:
                out[raw == 65535] = 0.0  # saturated / no-measurement marker of 16-bit sensors
    elif encoding == "nyu-raw":
        if raw.dtype != np.uint16:
            raise DepthcliError(f"nyu-raw depth must be a 16-bit image, got {raw.dtype}")
        swapped = raw.byteswap().astype(np.float64)
        with np.errstate(divide="ignore"):
            out = NYU_RAW_A / (NYU_RAW_B - swapped)
        out[swapped == NYU_RAW_INVALID] = 0.0
    elif encoding == "sun":
        if raw.dtype != np.uint16:
            raise DepthcliError(f"sun depth must be a 16-bit image, got {raw.dtype}")
        d = raw.astype(np.uint32)
        rotated = ((d >> 3) | (d << 13)) & 0xFFFF
        out = rotated.astype(np.float64) / (raw_scale or 1000.0)
    else:
        raise DepthcliError(f"unknown depth encoding '{encoding}'", f"use one of {', '.join(DEPTH_ENCODINGS)}")
    return sanitize_depth(out)




# --------------------------------------------------------------------------- TUM


def read_tum_list(path: Path, min_fields: int) -> list[tuple[float, list[str]]]:
    """Lines ``timestamp field ...`` of a TUM list (``#`` comments skipped)."""
    entries = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            if len(parts) < 1 + min_fields:
                raise ValueError
            stamp = float(parts[0])
            if not np.isfinite(stamp):
                raise ValueError
            entries.append((stamp, parts[1:]))
        except ValueError:
            raise DepthcliError(f"{path}:{lineno}: expected 'timestamp' + {min_fields} field(s), got '{line[:60]}'") from None
    return entries


def associate_timestamps(first: list[float], second: list[float], max_difference: float = TUM_MAX_DIFFERENCE) -> list[tuple[int, int]]:
    """Pair timestamps as TUM's ``associate.py``: all pairs closer than
    ``max_difference``, taken greedily by increasing difference, each timestamp
    used once. Returns index pairs ``(i_first, j_second)`` sorted by ``i_first``."""
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return []
    order_b = np.argsort(b)
    bs = b[order_b]
    candidates = []
    for i, t in enumerate(a):
        lo = np.searchsorted(bs, t - max_difference, side="left")
        hi = np.searchsorted(bs, t + max_difference, side="right")
        for k in range(lo, hi):
            diff = abs(t - bs[k])
            if diff < max_difference:
                candidates.append((diff, i, int(order_b[k])))
    candidates.sort()
    used_a: set[int] = set()
    used_b: set[int] = set()
    pairs = []
    for _, i, j in candidates:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j))
    return sorted(pairs)


def world_from_cam_from_tum(values: list[float]) -> np.ndarray:
    """``tx ty tz qx qy qz qw`` (TUM groundtruth, camera pose in the world) -> world_from_cam 4x4."""
    try:
        tx, ty, tz, qx, qy, qz, qw = (float(v) for v in values)
    except ValueError:
        raise DepthcliError(f"groundtruth pose {' '.join(map(str, values))} holds non-numbers") from None
    if not np.isfinite([tx, ty, tz, qx, qy, qz, qw]).all():
        raise DepthcliError(
            f"groundtruth pose {' '.join(map(str, values))} is not finite",
            "remove the line from groundtruth.txt (frames without a pose within 0.02 s are skipped)",
        )
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise DepthcliError(f"groundtruth quaternion {values[3:]} is not a rotation")
    from depthcli.geometry import rotation_from_quaternion

    R = rotation_from_quaternion(q)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = (tx, ty, tz)
    return T




# --------------------------------------------------------------------------- K and pose files


def read_K_file(path: Path) -> np.ndarray:
    """3x3 K from a text file (3x3 matrix, or one line ``fx fy cx cy``)."""
    from depthcli.geometry import make_K

    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"intrinsics file '{path}' does not exist")
    try:
        values = np.array(path.read_text().replace(",", " ").split(), dtype=np.float64)
    except ValueError:
        raise DepthcliError(f"intrinsics file '{path}' holds non-numbers", "write a 3x3 matrix or 'fx fy cx cy'") from None
    if values.size == 9:
        K = values.reshape(3, 3)
    elif values.size == 4:
        K = make_K(*values)
    else:
        raise DepthcliError(f"intrinsics file '{path}' has {values.size} numbers", "write a 3x3 matrix or 'fx fy cx cy'")
    check_K(K, str(path))
    return K


def check_K(K: np.ndarray, where: str) -> None:
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise DepthcliError(f"intrinsics from {where} are not a pinhole K (fx, fy > 0, last row 0 0 1): {K.tolist()}")



def read_pose_txt(path: Path) -> np.ndarray | None:
    """A 4x4 (or 3x4) rigid text matrix, rotation snapped to the nearest
    orthonormal one; None when it holds non-finite values (an invalid pose)."""
    try:
        T = np.array(path.read_text().replace(",", " ").split(), dtype=np.float64)
    except ValueError:
        raise DepthcliError(f"pose file '{path}' holds non-numbers", "expected a 4x4 camera-to-world matrix") from None
    if T.size not in (12, 16):
        raise DepthcliError(f"pose file '{path}' has {T.size} numbers", "expected a 4x4 camera-to-world matrix")
    T = T.reshape(-1, 4)
    if T.shape[0] == 3:
        T = np.vstack([T, [0, 0, 0, 1]])
    if not np.isfinite(T).all():
        return None
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-2) or np.linalg.det(R) < 0 or not np.allclose(T[3], [0, 0, 0, 1]):
        raise DepthcliError(f"pose file '{path}' is not a rigid transform", "expected a 4x4 camera-to-world matrix [R t; 0 0 0 1]")
    # Text poses carry ~1e-4 rounding in R (7-Scenes); snap R to the nearest
    # rotation so the stored cam_from_world is exactly rigid.
    u, _, vt = np.linalg.svd(R)
    T = T.copy()
    T[:3, :3] = u @ vt
    return T




# --------------------------------------------------------------------------- headers


def file_size_wh(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image or depth file from its header, without decoding
    the pixels; None when the header cannot be read here (the full read decides)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            shape = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
            return (int(shape[1]), int(shape[0])) if len(shape) == 2 else None
        if suffix == ".pfm":
            with open(path, "rb") as fh:
                fh.readline()
                w, h = fh.readline().split()[:2]
            return int(w), int(h)
        from PIL import Image  # header only; installed with matplotlib

        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - unknown header: let the full decode report it
        return None




def is_8bit_image(path: Path) -> bool:
    """True when an image file's header says 8 bits per sample (PIL mode 1, L, P, LA, RGB, RGBA);
    False for 16-bit / float files and for headers PIL cannot read (the full decode decides)."""
    path = Path(path)
    if path.suffix.lower() not in DEPTH_RAW_SUFFIXES:
        return False
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.mode in ("1", "L", "P", "LA", "RGB", "RGBA")
    except Exception:  # noqa: BLE001 - unknown header: let the full decode report it
        return False
