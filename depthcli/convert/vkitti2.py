"""Virtual KITTI 2 scene variation -> depth dataset (files: :mod:`depthcli.io.vkitti2`).

SOURCE is one variation folder (``Scene01/clone``) holding ``frames/depth/Camera_N``
and ``intrinsic.txt`` / ``extrinsic.txt``. Depth: uint16 centimetres / 100 =
metres, z-depth; 65535 (655.35 m) is the sky and becomes invalid (0). K per
frame and camera from ``intrinsic.txt``, published in OpenCV's integer-centre
convention (cx = 620.5 for 1242 px wide images: the exact centre there), stored
with +0.5. ``extrinsic.txt`` is cam_from_world (OpenCV axes), stored as is. RGB
(``frames/rgb/Camera_N/rgb_IIIII.jpg``) is optional.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.convert.common import K_from_opencv, PlannedFrame, write_frames
from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError
from depthcli.io import vkitti2 as files

KINDS = ("vkitti2",)
_DEPTH = re.compile(r"depth_(\d+)\.png$")


def _camera_dirs(src: Path) -> list[Path]:
    root = src / "frames" / "depth"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"Camera_\d+", p.name))


def detect(source: Path) -> tuple[str, str] | None:
    source = Path(source)
    if _camera_dirs(source) and (source / "intrinsic.txt").is_file():
        return "vkitti2", "Virtual KITTI 2 variation (frames/depth/Camera_N + intrinsic.txt)"
    return None


def convert_source(cfg: ConvertConfig, folder: Path, kind: str = "vkitti2") -> dict[str, Any]:
    src = Path(cfg.source)
    cams = _camera_dirs(src)
    if not cams:
        raise DepthcliError(f"'{src}' is not a Virtual KITTI 2 variation (no frames/depth/Camera_N)", "pass e.g. Scene01/clone")
    intr = files.read_table(src / "intrinsic.txt", 4)
    extr = files.read_table(src / "extrinsic.txt", 16)
    frames = []
    for cdir in cams:
        cam = int(cdir.name.split("_")[1])
        for path in sorted(cdir.glob("depth_*.png")):
            index = int(_DEPTH.search(path.name).group(1))  # type: ignore[union-attr]
            key = (index, cam)
            if key not in intr or key not in extr:
                raise DepthcliError(f"frame {index} of Camera_{cam} has no line in intrinsic.txt / extrinsic.txt")
            fx, fy, cx, cy = intr[key]
            if not (fx > 0 and fy > 0):
                raise DepthcliError(f"intrinsic.txt: frame {index} camera {cam} has focal lengths {fx:g}, {fy:g}")
            T = extr[key].reshape(4, 4)
            R = T[:3, :3]
            if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0 or not np.allclose(T[3], [0, 0, 0, 1]):
                raise DepthcliError(f"extrinsic.txt: frame {index} camera {cam} is not a rigid transform")
            image = src / "frames" / "rgb" / cdir.name / f"rgb_{index:05d}.jpg"
            frames.append(
                PlannedFrame(
                    name=f"{cdir.name}/{index:05d}",
                    load_depth=lambda path=path: files.read_depth_cm(path),
                    K=K_from_opencv(fx, fy, cx, cy),
                    cam_from_world=T,
                    image=image if image.is_file() else None,
                )
            )
    source = {
        "kind": "vkitti2",
        "path": str(src.absolute()),
        "depth_conversion": "uint16 centimetres / 100 = metres (z-depth); 65535 (655.35 m, sky) -> 0",
        "intrinsics": "intrinsic.txt per frame, OpenCV pixel centres -> cx, cy + 0.5",
    }
    summary = write_frames(cfg, folder, frames, label="vkitti2", depth_units="m", source=source)
    summary["depth_conversion"] = "centimetres -> metres; sky (655.35 m) -> invalid"
    return summary
