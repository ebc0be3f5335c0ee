"""What every source family shares: the downscale rule and the write loop.

A family plans its frames (:class:`PlannedFrame`: where the depth comes from,
already decoded to z-depth, K, cam_from_world, the image) and hands them to
:func:`write_frames`, which applies ``--max-depth`` and ``--downscale`` the same
way for every source and writes the dataset with
:class:`~depthcli.io.dataset.DatasetWriter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError


def K_from_opencv(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """depthcli's K for intrinsics published in OpenCV's pixel convention.

    OpenCV (and ROS, Bouguet's toolbox, KITTI's calibration) put the centre of
    pixel (col, row) at the integer point (col, row); depthcli (as COLMAP) puts
    it at (col + 0.5, row + 0.5). The same camera therefore has cx, cy larger by
    0.5 in depthcli; fx, fy are unchanged.
    """
    from depthcli.geometry import make_K

    return make_K(fx, fy, cx + 0.5, cy + 0.5)


def downscale_frame(
    depth: np.ndarray | None, K: np.ndarray, image: np.ndarray | None, factor: int, what: str = "frame"
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Shrink depth, K and image by an integer ``factor``, keeping them consistent.

    Rows and columns beyond a multiple of ``factor`` are cropped first (bottom and
    right, so the origin does not move); then stored pixel (col, row) covers the
    source pixels ``[f*col, f*col + f)``, so ``K / f`` (fx, fy, cx, cy divided by
    f) is exact for the crop. Depth keeps real samples
    (:func:`~depthcli.depth.downscale_depth_valid`), the image is area-averaged.
    """
    import cv2

    from depthcli.depth import downscale_depth_valid
    from depthcli.geometry import scale_K

    f = int(factor)
    if f == 1:
        return depth, K, image
    shape = depth.shape if depth is not None else image.shape[:2]  # type: ignore[union-attr]
    h, w = shape[0] // f, shape[1] // f
    if h < 1 or w < 1:
        raise DepthcliError(f"--downscale {f} leaves no pixels of the {shape[1]}x{shape[0]} {what}")
    if depth is not None:
        depth = downscale_depth_valid(depth, f)
    if image is not None:
        image = cv2.resize(np.ascontiguousarray(image[: h * f, : w * f]), (w, h), interpolation=cv2.INTER_AREA)
    return depth, scale_K(K, 1.0 / f), image


@dataclass
class PlannedFrame:
    """One frame of a source, before decoding."""

    name: str
    load_depth: Callable[[], np.ndarray]  #: returns ``[H, W]`` z-depth in the dataset's units, 0 = invalid
    K: np.ndarray  #: [3, 3] pinhole intrinsics of the full-size depth/image (pixels, centre of pixel (c, r) at (c+.5, r+.5))
    cam_from_world: np.ndarray  #: [4, 4] world -> camera, OpenCV axes
    image: Path | None = None  #: RGB image file of the same size, or None (depth-only)
    extra: dict[str, Any] = field(default_factory=dict)
    resize_image: bool = False  #: resize the image to the depth size (area) instead of refusing a mismatch


def write_frames(
    cfg: ConvertConfig,
    folder: Path,
    frames: list[PlannedFrame],
    *,
    label: str,
    depth_units: str,
    source: dict[str, Any],
    meta: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Decode and write ``frames`` into the (empty, temporary) dataset ``folder``.

    ``warnings`` are shown once the dataset is written (a refused run prints its error line only)."""
    from depthcli.console import progress_task, warn
    from depthcli.depth import apply_far_cutoff
    from depthcli.io.dataset import DatasetWriter
    from depthcli.io.images import read_image_rgb

    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise DepthcliError("--max-frames must be at least 1")
    if not frames:
        raise DepthcliError(f"no {label} frame found in '{cfg.source}'")
    frames = frames[: cfg.max_frames] if cfg.max_frames else frames
    f = int(cfg.downscale)
    writer = DatasetWriter(
        folder,
        depth_units=depth_units,  # type: ignore[arg-type]
        source=source,
        depth_format=cfg.depth_format,
        depth_scale=cfg.depth_scale,
        previews=cfg.previews,
        meta={**(meta or {}), "downscale": f, "max_depth": cfg.max_depth},
    )
    with progress_task(f"convert {label}", len(frames)) as (bar, task):
        for fr in frames:
            depth = np.asarray(fr.load_depth(), dtype=np.float32)
            image = read_image_rgb(fr.image) if fr.image is not None else None
            resized = False
            if image is not None and image.shape[:2] != depth.shape and fr.resize_image:
                import cv2

                image = cv2.resize(image, (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_AREA)
                resized = True
            if image is not None and image.shape[:2] != depth.shape:
                raise DepthcliError(
                    f"frame '{fr.name}': depth is {depth.shape[1]}x{depth.shape[0]} but image '{fr.image}' is "
                    f"{image.shape[1]}x{image.shape[0]}",
                    "image and depth of a frame must have the same size",
                )
            if cfg.max_depth is not None:
                depth = apply_far_cutoff(depth, cfg.max_depth)
            depth, K, image = downscale_frame(depth, fr.K, image, f, f"frame '{fr.name}'")
            image_arg: Any = image if (image is not None and (f > 1 or resized)) else fr.image
            writer.add_frame(fr.name, depth, K, fr.cam_from_world, image=image_arg, extra=fr.extra)
            bar.update(task, advance=1, info=fr.name)
    summary = writer.close()
    for message in warnings or []:
        warn(message)
    if writer.overflow:
        warn(f"{writer.overflow} depth pixels exceed the png16 range and were stored invalid (use a smaller --depth-scale or npy)")
    return summary
