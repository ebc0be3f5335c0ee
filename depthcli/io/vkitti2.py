"""Virtual KITTI 2 text ground truth and depth files (Naver Labs, vkitti_2.0.3).

Layout of one scene variation (``SceneXX/<variation>``, e.g. ``Scene01/clone``)::

    frames/rgb/Camera_N/rgb_IIIII.jpg
    frames/depth/Camera_N/depth_IIIII.png     # uint16, centimetres; 65535 (655.35 m) = sky / far
    intrinsic.txt    # header, then: frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]
    extrinsic.txt    # header, then: frame cameraID r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3 0 0 0 1
                     # (world -> camera, OpenCV axes)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depthcli.errors import DepthcliError

#: stored uint16 / 100 = metres
DEPTH_PER_METRE = 100.0
#: 65535 cm = 655.35 m marks the sky (no surface): invalid
SKY_VALUE = 65535


def read_table(path: Path, ncols: int) -> dict[tuple[int, int], np.ndarray]:
    """``{(frame, camera): values}`` of a VKITTI2 text file with a header line."""
    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"Virtual KITTI 2 file '{path}' does not exist", "it comes with vkitti_2.0.3_textgt")
    out: dict[tuple[int, int], np.ndarray] = {}
    lines = path.read_text().splitlines()
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2 + ncols:
                raise ValueError
            frame, cam = int(parts[0]), int(parts[1])
            values = np.array([float(v) for v in parts[2:]], dtype=np.float64)
        except ValueError:
            raise DepthcliError(f"{path}:{lineno}: expected 'frame cameraID' + {ncols} numbers, got '{line[:60]}'") from None
        if not np.isfinite(values).all():
            raise DepthcliError(f"{path}:{lineno}: values are not finite")
        out[(frame, cam)] = values
    return out


def read_depth_cm(path: Path) -> np.ndarray:
    """``[H, W]`` float32 metres; the sky value and 0 become 0."""
    from depthcli.io.depth_files import read_png16

    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"depth file '{path}' does not exist")
    raw = read_png16(path)
    if raw.dtype != np.uint16:
        raise DepthcliError(f"Virtual KITTI 2 depth '{path}' is {raw.dtype}, expected 16-bit centimetres")
    out = raw.astype(np.float32) / DEPTH_PER_METRE
    out[raw == SKY_VALUE] = 0.0
    return out
