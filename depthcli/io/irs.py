"""IRS (Indoor Robotics Stereo, HKBU-HPML) files: left image + disparity OpenEXR.

A sequence folder holds ``l_N.png`` (left), ``r_N.png`` (right) and ``d_N.exr``:
the left image's **disparity** in pixels (one float channel). The renders are
960x540 with focal length 480 px and a 0.1 m baseline, so
``depth = 0.1 * 480 / disparity`` metres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depthcli.errors import DepthcliError

FOCAL_PX = 480.0
BASELINE_M = 0.1
SIZE = (960, 540)


def read_disparity_exr(path: Path) -> np.ndarray:
    """``[H, W]`` float32 disparity from a one-channel EXR (or several equal channels)."""
    try:
        import OpenEXR
    except ImportError:  # pragma: no cover - a dependency
        raise DepthcliError("reading IRS disparity (.exr) needs OpenEXR", "pip install openexr") from None
    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"disparity file '{path}' does not exist")
    try:
        with OpenEXR.File(str(path)) as fh:
            channels = {name: np.asarray(ch.pixels) for name, ch in fh.channels().items()}
    except Exception as exc:  # noqa: BLE001 - OpenEXR raises plain Exceptions on bad files
        raise DepthcliError(f"cannot read EXR '{path}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    planes = [c for c in channels.values() if c.ndim == 2]
    planes += [c[..., i] for c in channels.values() if c.ndim == 3 for i in range(c.shape[2])]
    if not planes:
        raise DepthcliError(f"EXR '{path}' holds no image channel")
    first = planes[0].astype(np.float32)
    if any(p.shape != first.shape or not np.array_equal(p.astype(np.float32), first, equal_nan=True) for p in planes[1:]):
        raise DepthcliError(f"EXR '{path}' has {len(planes)} different channels; an IRS disparity map has one")
    return first
