"""MVSNet-style camera files, as BlendedMVS ships them (``cams/NNNNNNNN_cam.txt``)::

    extrinsic
    4x4 world -> camera (OpenCV axes)

    intrinsic
    3x3 K

    DEPTH_MIN DEPTH_INTERVAL [DEPTH_NUM DEPTH_MAX]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depthcli.errors import DepthcliError


def read_cam_txt(path: Path) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """``(cam_from_world [4, 4], K [3, 3], depth range values)``."""
    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"camera file '{path}' does not exist")
    words = path.read_text().split()
    try:
        e = words.index("extrinsic")
        i = words.index("intrinsic")
        T = np.array(words[e + 1 : e + 17], dtype=np.float64).reshape(4, 4)
        K = np.array(words[i + 1 : i + 10], dtype=np.float64).reshape(3, 3)
        rest = [float(v) for v in words[i + 10 :]]
    except ValueError:
        raise DepthcliError(f"'{path}' is not an MVSNet camera file (extrinsic 4x4, intrinsic 3x3)") from None
    if not np.isfinite(T).all() or not np.isfinite(K).all():
        raise DepthcliError(f"camera file '{path}' holds non-finite values")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0 or not np.allclose(T[3], [0, 0, 0, 1]):
        raise DepthcliError(f"camera file '{path}': the extrinsic is not a rigid transform")
    if not (K[0, 0] > 0 and K[1, 1] > 0) or not np.allclose(K[2], [0, 0, 1]):
        raise DepthcliError(f"camera file '{path}': the intrinsic is not a pinhole K (fx, fy > 0, last row 0 0 1)")
    u, _, vt = np.linalg.svd(R)
    T = T.copy()
    T[:3, :3] = u @ vt
    return T, K, rest
