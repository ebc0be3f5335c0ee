"""ScanNet-style exported scene -> depth dataset (files: :mod:`depthcli.io.rgbd`).

SOURCE holds what ScanNet's ``SensReader`` exports::

    color/N.jpg                  colour (1296x968 in ScanNet)
    depth/N.png                  uint16 millimetres, 0 = invalid (640x480 in ScanNet)
    pose/N.txt                   4x4 camera-to-world; a row of -inf marks a lost frame (skipped)
    intrinsic/intrinsic_depth.txt   4x4 (K in the top-left 3x3) of the depth camera

Depth is stored with the depth camera's K, as given. A colour image of another
size is resized to the depth size (area), which assumes the two cameras see the
same field of view: ScanNet's are close but not registered; the summary says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from depthcli.convert.common import PlannedFrame, write_frames
from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError
from depthcli.geometry import invert_rigid
from depthcli.io.rgbd import check_K, decode_depth, file_size_wh, read_pose_txt, read_raw_depth

KINDS = ("scannet",)
DEPTH_PER_METRE = 1000.0


def detect(source: Path) -> tuple[str, str] | None:
    source = Path(source)
    if all((source / d).is_dir() for d in ("color", "depth", "pose", "intrinsic")):
        return "scannet", "ScanNet-style export (color/ depth/ pose/ intrinsic/)"
    return None


def read_matrix_K(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DepthcliError(f"intrinsics file '{path}' does not exist", "ScanNet exports intrinsic/intrinsic_depth.txt")
    try:
        m = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError:
        raise DepthcliError(f"intrinsics file '{path}' holds non-numbers") from None
    if m.size not in (9, 16):
        raise DepthcliError(f"intrinsics file '{path}' has {m.size} numbers, expected a 4x4 (or 3x3) matrix")
    K = m.reshape(4, 4)[:3, :3] if m.size == 16 else m.reshape(3, 3)
    check_K(K, str(path))
    return K


def _load(path: Path) -> np.ndarray:
    raw = read_raw_depth(path)
    if raw.dtype.kind == "f":
        raise DepthcliError(f"ScanNet depth '{path}' holds floats, expected uint16 millimetres")
    return decode_depth(raw, "linear", DEPTH_PER_METRE)


def convert_source(cfg: ConvertConfig, folder: Path, kind: str = "scannet") -> dict[str, Any]:
    src = Path(cfg.source)
    K = read_matrix_K(src / "intrinsic" / "intrinsic_depth.txt")
    depths = sorted((src / "depth").glob("*.png"), key=lambda p: (len(p.stem), p.stem))
    if not depths:
        raise DepthcliError(f"no depth/*.png in '{src}'")
    frames, lost, resized = [], 0, 0
    for path in depths:
        stem = path.stem
        T = read_pose_txt(src / "pose" / f"{stem}.txt") if (src / "pose" / f"{stem}.txt").is_file() else None
        if not (src / "pose" / f"{stem}.txt").is_file():
            raise DepthcliError(f"frame {stem} has no pose file pose/{stem}.txt")
        if T is None:
            lost += 1  # -inf pose: ScanNet's tracking was lost
            continue
        image = next((c for c in (src / "color" / f"{stem}.jpg", src / "color" / f"{stem}.png") if c.is_file()), None)
        if image is not None and file_size_wh(image) != file_size_wh(path):
            resized += 1
        frames.append(PlannedFrame(name=stem, load_depth=lambda path=path: _load(path), K=K,
                                   cam_from_world=invert_rigid(T), image=image, resize_image=True))
    if not frames:
        raise DepthcliError(f"no scannet frame in '{src}' has a valid pose ({lost} with -inf poses)")
    source = {"kind": "scannet", "path": str(src.absolute()), "depth_conversion": "uint16 millimetres / 1000 = metres (z)",
              "intrinsics": "intrinsic/intrinsic_depth.txt"}
    if resized:
        source["colour"] = "resized to the depth size (colour and depth cameras assumed to share the field of view)"
    warnings = [f"{lost} frame(s) with an invalid (-inf) pose are skipped"] if lost else []
    summary = write_frames(cfg, folder, frames, label="scannet", depth_units="m", source=source, warnings=warnings)
    summary["depth_conversion"] = "millimetres -> metres"
    if lost:
        summary["skipped"] = {"invalid_pose": lost}
    if resized:
        summary["colour_resized_to_depth"] = resized
    return summary
