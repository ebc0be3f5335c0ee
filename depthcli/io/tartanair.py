"""TartanAir trajectory files (castacks/tartanair_tools ``data_type.md``).

One trajectory (``ENV/Easy|Hard/PNNN``)::

    image_left/NNNNNN_left.png            # 640x480 RGB
    depth_left/NNNNNN_left_depth.npy      # float32 z-depth in metres; the sky is a large value (e.g. 10000)
    pose_left.txt                         # line i = frame i: tx ty tz qx qy qz qw, camera in the world,
                                          # NED axes (x forward, y right, z down)
    (the same with _right)

Fixed camera: fx = fy = 320, cx = 320, cy = 240 (90 deg field of view); stereo
baseline 0.25 m, hence disparity = 80 / depth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depthcli.errors import DepthcliError

INTRINSICS = (320.0, 320.0, 320.0, 240.0)
SIZE = (640, 480)
BASELINE_M = 0.25


def read_poses(path: Path) -> np.ndarray:
    """``[N, 7]`` rows ``tx ty tz qx qy qz qw``; non-numbers and non-finite rows are refused."""
    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"TartanAir pose file '{path}' does not exist")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            values = [float(v) for v in line.split()]
            if len(values) != 7:
                raise ValueError
        except ValueError:
            raise DepthcliError(f"{path}:{lineno}: expected 'tx ty tz qx qy qz qw', got '{line[:60]}'") from None
        if not np.isfinite(values).all():
            raise DepthcliError(f"{path}:{lineno}: pose is not finite ({line.strip()[:60]})")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 7)


def read_depth_npy(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"depth file '{path}' does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DepthcliError(f"cannot read '{path}': {str(exc).splitlines()[0]}") from None
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise DepthcliError(f"TartanAir depth '{path}' is {arr.dtype} {arr.shape}, expected a 2-D float array (metres)")
    return arr.astype(np.float32)
