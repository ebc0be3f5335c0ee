"""IRS sequence -> depth dataset (files: :mod:`depthcli.io.irs`).

IRS ships the left image's **disparity** (``d_N.exr``), not depth: depth =
baseline * focal / disparity = 0.1 m * 480 px / d (960x540 renders); a
disparity <= 0 or non-finite is invalid (0). K: fx = fy = 480 with the
principal point at the image centre (480, 270 in depthcli's convention). No
poses are shipped: identity.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.convert.common import PlannedFrame, write_frames
from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError
from depthcli.geometry import make_K
from depthcli.io import irs as files

KINDS = ("irs",)
_DISP = re.compile(r"d_(\d+)\.exr$")


def detect(source: Path) -> tuple[str, str] | None:
    source = Path(source)
    if not source.is_dir():
        return None
    n = len([p for p in source.glob("d_*.exr") if _DISP.search(p.name)])
    if n and any(source.glob("l_*.png")):
        return "irs", f"IRS sequence ({n} d_N.exr disparity maps + l_N.png)"
    return None


def depth_from_disparity_irs(disp: np.ndarray) -> np.ndarray:
    d = np.asarray(disp, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    out = np.zeros(d.shape, np.float32)
    out[ok] = (files.BASELINE_M * files.FOCAL_PX / d[ok]).astype(np.float32)
    return out


def _load(path: Path) -> np.ndarray:
    disp = files.read_disparity_exr(path)
    if (disp.shape[1], disp.shape[0]) != files.SIZE:
        raise DepthcliError(
            f"'{path.name}' is {disp.shape[1]}x{disp.shape[0]}; IRS focal length and baseline are known for {files.SIZE[0]}x{files.SIZE[1]}"
        )
    return depth_from_disparity_irs(disp)


def convert_source(cfg: ConvertConfig, folder: Path, kind: str = "irs") -> dict[str, Any]:
    src = Path(cfg.source)
    disps = sorted((p for p in src.glob("d_*.exr") if _DISP.search(p.name)), key=lambda p: int(_DISP.search(p.name).group(1)))  # type: ignore[union-attr]
    if not disps:
        raise DepthcliError(f"'{src}' holds no IRS disparity maps (d_N.exr)")
    w, h = files.SIZE
    K = make_K(files.FOCAL_PX, files.FOCAL_PX, w / 2, h / 2)
    frames = []
    for path in disps:
        n = _DISP.search(path.name).group(1)  # type: ignore[union-attr]
        image = src / f"l_{n}.png"
        frames.append(PlannedFrame(name=f"{int(n):06d}", load_depth=lambda path=path: _load(path), K=K,
                                   cam_from_world=np.eye(4), image=image if image.is_file() else None))
    conversion = f"disparity -> depth = {files.BASELINE_M:g} m * {files.FOCAL_PX:g} px / disparity (z, metres)"
    source = {"kind": "irs", "path": str(src.absolute()), "depth_conversion": conversion, "poses": "identity (IRS has none)"}
    summary = write_frames(cfg, folder, frames, label="irs", depth_units="m", source=source)
    summary["depth_conversion"] = conversion
    return summary
