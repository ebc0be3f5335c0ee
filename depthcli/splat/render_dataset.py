"""Render trained splats at every camera of a depth dataset, as a new depth dataset.

The result can be compared with any other depth data (``depthcli eval``): same
frame names, intrinsics, poses and depth units; the depth is the rendered z-depth
(``"ED"``: expected depth ``D / alpha``; ``"D"``: accumulated depth ``sum w z``,
which under-estimates where alpha < 1). Pixels whose alpha is at most
``min_alpha`` are stored as 0 (invalid): nothing was rendered there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from depthcli.errors import DepthcliError


def render_dataset(
    splats_ply: Path,
    dataset: Path,
    out: Path,
    *,
    mode: str = "ED",
    backend: str = "auto",
    device: str = "cpu",
    min_alpha: float = 0.5,
    rgb: bool = True,
    previews: bool = False,
    overwrite: bool = False,
    cpu_threads: int | None = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Render ``splats_ply`` at every frame of ``dataset`` into the depth dataset ``out``.

    Writes ``out`` atomically (complete or absent). Returns a summary dict with the
    mean coverage (fraction of pixels with alpha > ``min_alpha``) and, where the
    input dataset has depth, mean AbsRel of the render against it. ``cpu_threads``:
    torch CPU threads while rendering (None: torch's default); ``threads``: threads of the
    compiled CPU rasteriser (None: all cores).
    """
    from depthcli.splat.backend_cpu import raster_threads
    from depthcli.splat.trainer import torch_threads

    with torch_threads(cpu_threads, device), raster_threads(threads, device):
        return _render_dataset(splats_ply, dataset, out, mode, backend, device, min_alpha, rgb, previews, overwrite)


def _render_dataset(splats_ply, dataset, out, mode, backend, device, min_alpha, rgb, previews, overwrite):
    import torch

    from depthcli.console import track
    from depthcli.io.atomic import atomic_output_dir
    from depthcli.io.dataset import DatasetWriter, load_dataset
    from depthcli.io.ply import read_splats_ply
    from depthcli.splat.model import arrays_to_tensors
    from depthcli.splat.trainer import _check_device, depth_metrics, mean_metrics, render_depth

    if mode not in ("D", "ED"):
        raise DepthcliError(f"unknown render mode '{mode}'", "use D or ED")
    if backend not in ("auto", "cpu", "gsplat", "torch"):
        raise DepthcliError(f"unknown backend '{backend}'", "use auto, cpu, gsplat or torch")
    _check_device(device)
    arrays = read_splats_ply(Path(splats_ply))
    ds = load_dataset(Path(dataset))
    if not ds.frames:
        raise DepthcliError(f"dataset '{dataset}' has no frames")
    if ds.depth_kind != "z":
        raise DepthcliError(f"dataset '{dataset}' stores {ds.depth_kind}; render writes z-depth in its frame",
                            "use a dataset with z-depth")
    with_rgb = rgb and arrays.has_colors
    render_mode = ("RGB+" + mode) if with_rgb else mode
    tensors = arrays_to_tensors(arrays, device)
    dev = torch.device(device)
    per_view = []
    coverages = []
    with atomic_output_dir(Path(out), overwrite) as tmp:
        writer = DatasetWriter(
            tmp,
            depth_units=ds.depth_units,  # type: ignore[arg-type]
            source={"kind": "render", "splats": str(splats_ply), "dataset": str(dataset), "mode": mode,
                    "min_alpha": min_alpha, "backend": backend},
            previews=previews,
        )
        with torch.no_grad():
            for frame in track(ds.frames, "render"):
                vm = torch.tensor(frame.cam_from_world, dtype=torch.float32, device=dev)
                K = torch.tensor(frame.K, dtype=torch.float32, device=dev)
                img, depth, alpha, _ = render_depth(tensors, vm, K, frame.width, frame.height, render_mode, backend)
                depth = depth.cpu().numpy().astype(np.float32)
                alpha = alpha.cpu().numpy()
                depth[~(alpha > min_alpha)] = 0.0
                coverage = float((alpha > min_alpha).mean())
                coverages.append(coverage)
                image = None
                if img is not None:
                    image = (np.clip(img.cpu().numpy(), 0, 1) * 255.0 + 0.5).astype(np.uint8)
                writer.add_frame(frame.name, depth, frame.K, frame.cam_from_world, image=image,
                                 extra={"coverage": coverage})
                try:
                    gt = ds.read_depth(frame)
                except DepthcliError:
                    gt = None
                if gt is not None and (gt > 0).any():
                    per_view.append(depth_metrics(depth, gt, alpha, min_alpha))
        summary = writer.close()
    summary.update({"out": str(out), "mode": mode, "rgb": with_rgb, "gaussians": len(arrays),
                    "mean_alpha_coverage": float(np.mean(coverages))})
    if per_view:
        summary["vs_input_depth"] = mean_metrics(per_view)
    return summary
