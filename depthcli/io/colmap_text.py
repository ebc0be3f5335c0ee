"""Writing a COLMAP sparse model in COLMAP's text format (no pycolmap needed).

``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...`` (here always
``PINHOLE fx fy cx cy``: depthcli images are undistorted);
``images.txt``: two lines per image, ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID
NAME`` where (q, t) is **cam_from_world** (COLMAP's convention, the same as
depthcli's), then the image's ``POINTS2D`` as ``X Y POINT3D_ID`` triples;
``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR TRACK[]`` with the track as
``IMAGE_ID POINT2D_IDX`` pairs. Pixel coordinates use COLMAP's convention
(centre of the top-left pixel at (0.5, 0.5)), which is depthcli's.
Ids start at 1. Reading a model back is :mod:`depthcli.io.colmap`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TextImage:
    """One registered image and its 2D observations."""

    name: str  #: file name relative to the image folder
    camera_id: int
    cam_from_world: np.ndarray  #: [4, 4]
    xy: np.ndarray  #: [M, 2] pixel positions of the observations
    point3d_ids: np.ndarray  #: [M] id of the observed 3D point (-1: none)


def _g(x: float) -> str:
    return f"{float(x):.17g}"


def write_text_model(
    model_dir: Path,
    cameras: list[tuple[int, int, np.ndarray]],
    images: list[TextImage],
    xyz: np.ndarray,
    rgb: np.ndarray,
    tracks: list[list[tuple[int, int]]],
) -> None:
    """Write ``cameras.txt``, ``images.txt`` and ``points3D.txt`` into ``model_dir``.

    ``cameras[i] = (width, height, K)`` gets id ``i + 1``; ``images[j]`` gets id
    ``j + 1``; point ``p`` gets id ``p + 1`` with colour ``rgb[p]`` and track
    ``tracks[p]`` of ``(image_id, point2d_index)`` pairs. Reprojection errors are 0.
    """
    from depthcli.geometry import quaternion_from_rotation

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(cameras)}"]
    for i, (w, h, K) in enumerate(cameras):
        lines.append(f"{i + 1} PINHOLE {int(w)} {int(h)} " + " ".join(_g(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])))
    (model_dir / "cameras.txt").write_text("\n".join(lines) + "\n")

    n_obs = sum(len(im.point3d_ids) for im in images)
    with open(model_dir / "images.txt", "w") as fh:
        fh.write("# Image list with two lines of data per image:\n"
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
                 f"# Number of images: {len(images)}, mean observations per image: {n_obs / max(1, len(images)):.6g}\n")
        for j, im in enumerate(images):
            T = np.asarray(im.cam_from_world, dtype=np.float64)
            q = quaternion_from_rotation(T[:3, :3])
            fh.write(f"{j + 1} " + " ".join(_g(v) for v in (*q, *T[:3, 3])) + f" {im.camera_id} {im.name}\n")
            fh.write(" ".join(f"{_g(x)} {_g(y)} {int(p)}" for (x, y), p in zip(im.xy, im.point3d_ids)) + "\n")

    with open(model_dir / "points3D.txt", "w") as fh:
        fh.write("# 3D point list with one line of data per point:\n"
                 "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
                 f"# Number of points: {len(xyz)}\n")
        for p in range(len(xyz)):
            x, y, z = xyz[p]
            r, g, b = (int(c) for c in rgb[p])
            track = " ".join(f"{i} {k}" for i, k in tracks[p])
            fh.write(f"{p + 1} {_g(x)} {_g(y)} {_g(z)} {r} {g} {b} 0 {track}\n")
