"""Run an estimator on a folder of images and write a depth dataset of predictions.

The predictions are **affine-invariant disparity** (``depth_units="affine"``,
``depth_kind="disparity"``: larger = nearer, unknown scale and shift), at the
input image resolution (predicted at the model's size, resized back). The
camera is unknown: every frame gets an identity pose and a nominal K, which
``dataset.json`` says explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class PredictConfig:
    """Settings of :func:`predict`."""

    model: Path  # checkpoint folder (transformers format: config.json + model.safetensors)
    images: Path  # folder of images (searched recursively)
    out: Path  # output depth dataset (written atomically)
    size: int | None = None  # model input short side (multiple of 14); None = the checkpoint's size
    previews: bool = True  # write colourised previews
    overwrite: bool = False  # replace an existing output
    threads: int | None = None  # torch CPU threads
    device: str = "auto"  # "auto", "cpu" or "cuda"

    def validate(self) -> None:
        """Refuse out-of-range settings (one line each) before anything is read or written."""
        from depthcli.estimators.models import PATCH
        from depthcli.validate import check_device, check_int, check_multiple

        check_multiple(self.size, "--size", PATCH, optional=True)
        check_int(self.threads, "--threads", min=1, max=1024, optional=True)
        check_device(self.device)


def nominal_K(width: int, height: int) -> np.ndarray:
    """A stand-in pinhole K (focal = max(W, H), principal point at the centre): NOT a calibration."""
    f = float(max(width, height))
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], dtype=np.float64)


def predict(cfg: PredictConfig) -> dict[str, Any]:
    """Predict relative disparity for every readable image of ``cfg.images``; return a summary.

    Non-image files and undecodable images are skipped and counted. Raises
    :class:`DepthcliError` when nothing can be predicted.
    """
    import time

    import torch

    from depthcli.console import progress_task, warn
    from depthcli.errors import DepthcliError
    from depthcli.estimators.data import list_images, try_read_image
    from depthcli.estimators.models import PATCH, load_model, model_input_size, predict_disparity
    from depthcli.io.atomic import atomic_output_dir, check_output_dir
    from depthcli.estimators.training import Dist, resolve_device
    from depthcli.io.dataset import DatasetWriter

    cfg.validate()
    device = resolve_device(cfg.device, Dist())  # --device cuda without a GPU: one clear line
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    check_output_dir(Path(cfg.out), cfg.overwrite, inputs=[cfg.model, cfg.images])
    files, skipped = list_images(Path(cfg.images))
    if not files:
        raise DepthcliError(f"no images in '{cfg.images}'", "pass a folder of .jpg/.png images")
    model = load_model(Path(cfg.model))
    model.to(device)
    size = int(cfg.size or model_input_size(model))
    if size % PATCH:
        raise DepthcliError(f"--size must be a multiple of {PATCH}, got {size}")
    unreadable: list[str] = []
    t0 = time.time()
    n = 0
    with atomic_output_dir(Path(cfg.out), cfg.overwrite, what="predict", inputs=[cfg.model, cfg.images]) as tmp:
        writer = DatasetWriter(
            tmp,
            depth_units="affine",
            depth_kind="disparity",
            source={"kind": "prediction", "model": str(cfg.model), "images": str(cfg.images)},
            previews=cfg.previews,
            meta={
                "prediction": {
                    "values": "affine-invariant disparity (inverse depth up to unknown scale and shift; larger = nearer)",
                    "model_input_short_side": size,
                    "resolution": "input image resolution (predicted at model size, resized back bilinearly)",
                },
                "camera": "unknown: identity cam_from_world and a nominal K (focal = max(W, H)) per frame; not a calibration",
            },
        )
        with progress_task("predict", len(files)) as (bar, task):
            for path in files:
                img = try_read_image(path)
                if img is None:
                    unreadable.append(str(path.relative_to(cfg.images)))
                    bar.update(task, advance=1)
                    continue
                disp = predict_disparity(model, img, size)
                disp[~np.isfinite(disp) | (disp < 0)] = 0
                h, w = img.shape[:2]
                writer.add_frame(str(path.relative_to(cfg.images)), disp, nominal_K(w, h), np.eye(4), image=path)
                n += 1
                bar.update(task, advance=1, info=f"{n / max(1e-9, time.time() - t0):.2f} img/s")
        if n == 0:
            raise DepthcliError(f"none of the {len(files)} images in '{cfg.images}' could be read",
                                "are they valid image files?")
        summary = writer.close()
    elapsed = time.time() - t0
    if skipped or unreadable:
        warn(f"skipped {len(skipped)} non-image and {len(unreadable)} unreadable files")
    summary.update({"output": str(cfg.out), "predicted": n, "skipped_non_image": len(skipped),
                    "skipped_unreadable": len(unreadable), "size": size, "seconds": round(elapsed, 2),
                    "images_per_s": round(n / elapsed, 3) if elapsed > 0 else 0.0})
    return summary
