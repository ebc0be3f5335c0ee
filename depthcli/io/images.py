"""Reading and writing images as RGB uint8 arrays (OpenCV underneath)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depthcli.errors import DepthcliError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


def read_image_rgb(path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB. Raises DepthcliError if missing or undecodable."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"image '{path}' does not exist", "check the image folder")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DepthcliError(f"cannot decode image '{path}'", "is it a readable image file?")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_image_rgb(path: Path, image: np.ndarray) -> None:
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image * 255.0 if image.dtype.kind == "f" else image), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        ok = cv2.imwrite(str(path), image)
    else:
        ok = cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        from depthcli.errors import raise_if_disk_full

        raise_if_disk_full(path, image.nbytes)  # OpenCV gives no reason
        raise DepthcliError(f"cannot write image '{path}'")
