"""Depth-Anything-V2 models: ONE preset table, build / load / save, and inference.

The architecture is transformers' ``DepthAnythingForDepthEstimation`` (a DINOv2
backbone + DPT neck + relative head); depthcli does not re-implement it. The
head's output is **relative (affine-invariant) disparity**: larger = nearer,
known only up to an unknown scale and shift.

A checkpoint is a folder in transformers format (``config.json`` +
``model.safetensors``, written by ``save_pretrained``), optionally with
``depthcli.json`` (input size, preset). A downloaded ``Depth-Anything-V2-*-hf``
folder loads as is; nothing is ever downloaded (``local_files_only``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.errors import DepthcliError

#: ImageNet normalisation, as Depth Anything's preprocessing.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH = 14

#: The one preset table. small/base/large are Depth-Anything-V2's published
#: sizes (ViT-S/B/L DINOv2 backbones); tiny is a CPU-sized model for tests/demos.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=48, num_hidden_layers=4, num_attention_heads=3, out_indices=[1, 2, 3, 4],
                 neck_hidden_sizes=[24, 48, 96, 96], fusion_hidden_size=32, head_hidden_size=16, input_size=126),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, out_indices=[3, 6, 9, 12],
                  neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64, head_hidden_size=32, input_size=518),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, out_indices=[3, 6, 9, 12],
                 neck_hidden_sizes=[96, 192, 384, 768], fusion_hidden_size=128, head_hidden_size=32, input_size=518),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, out_indices=[5, 12, 18, 24],
                  neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256, head_hidden_size=32,
                  input_size=518),
}
META_FILE = "depthcli.json"
#: Checkpoints shipped as package data (``depthcli/estimators/pretrained/NAME/``); each one's
#: ``depthcli.json`` says how it was made (``provenance``: the depthcli commands that rebuild it).
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def pretrained_checkpoint(name: str = "tiny-synth") -> Path:
    """The folder of a checkpoint shipped with depthcli (see ``PRETRAINED_DIR``)."""
    names = sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file()) \
        if PRETRAINED_DIR.is_dir() else []
    if name not in names:
        raise DepthcliError(f"no shipped checkpoint '{name}'",
                            f"shipped: {', '.join(names) or 'none (is depthcli installed with its package data?)'}")
    return PRETRAINED_DIR / name


def resolve_checkpoint(path: Path | str) -> Path:
    """``path`` itself, or the shipped checkpoint of that name when no such folder exists (e.g. ``tiny-synth``)."""
    p = Path(path)
    if not p.exists() and len(p.parts) == 1 and (PRETRAINED_DIR / p.name / "config.json").is_file():
        return PRETRAINED_DIR / p.name
    return p


def make_config(preset: str, input_size: int | None = None):
    """A ``DepthAnythingConfig`` (relative head, DINOv2 backbone) for a preset name."""
    from transformers import DepthAnythingConfig, Dinov2Config

    if preset not in PRESETS:
        raise DepthcliError(f"unknown preset '{preset}'", f"use one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    size = int(input_size or p["input_size"])
    backbone = Dinov2Config(
        hidden_size=p["hidden_size"],
        num_hidden_layers=p["num_hidden_layers"],
        num_attention_heads=p["num_attention_heads"],
        intermediate_size=4 * p["hidden_size"],
        patch_size=PATCH,
        image_size=size,
        layerscale_value=1.0,
        out_indices=p["out_indices"],
        reshape_hidden_states=False,
        apply_layernorm=True,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=PATCH,
        reassemble_hidden_size=p["hidden_size"],
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=p["neck_hidden_sizes"],
        fusion_hidden_size=p["fusion_hidden_size"],
        head_hidden_size=p["head_hidden_size"],
        depth_estimation_type="relative",
    )


def build_model(preset: str = "tiny", input_size: int | None = None, seed: int | None = 0):
    """A freshly initialised model for ``preset`` (deterministic for a given ``seed``)."""
    import torch
    from transformers import DepthAnythingForDepthEstimation

    if seed is not None:
        torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(make_config(preset, input_size))
    # transformers initialises every conv with N(0, 0.02): fine for fine-tuning
    # published weights, but through the ~15 convs of the DPT neck and head the
    # signal (and gradient) of a model trained from scratch shrinks ~1e6-fold
    # and it does not learn. PyTorch's default (Kaiming) init keeps the scale.
    # The head ends in a ReLU: a positive output bias starts it in the live range.
    with torch.no_grad():
        for mod in list(model.neck.modules()) + list(model.head.modules()):
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                mod.reset_parameters()
        model.head.conv3.bias.fill_(1.0)
    model.depthcli_meta = {"preset": preset, "input_size": int(input_size or PRESETS[preset]["input_size"])}
    return model


def load_model(path: Path):
    """Load a transformers-format Depth-Anything checkpoint folder (no download).

    A bare name that is not a folder here names a shipped checkpoint (``tiny-synth``).

    Raises :class:`DepthcliError` for a missing folder or an incompatible
    checkpoint (another architecture, a metric head, mismatched weights).
    """
    from transformers import AutoConfig, DepthAnythingForDepthEstimation

    path = resolve_checkpoint(path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise DepthcliError(
            f"checkpoint '{path}' is not a model folder (no config.json)",
            "pass a folder written by depthcli train/distill or a downloaded Depth-Anything-V2-*-hf folder",
        )
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad checkpoint
        raise DepthcliError(f"cannot read '{path / 'config.json'}': {exc}", "is it a transformers checkpoint?") from None
    if getattr(config, "model_type", None) != "depth_anything":
        raise DepthcliError(
            f"checkpoint '{path}' is a '{getattr(config, 'model_type', '?')}' model, not Depth Anything",
            "depthcli estimators use Depth-Anything-V2 checkpoints",
        )
    if getattr(config, "depth_estimation_type", "relative") != "relative":
        raise DepthcliError(f"checkpoint '{path}' has a metric head", "use a relative Depth-Anything-V2 checkpoint")
    from transformers.utils import logging as tf_logging

    old = tf_logging.get_verbosity()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    try:
        model, info = DepthAnythingForDepthEstimation.from_pretrained(
            path, local_files_only=True, output_loading_info=True
        )
    except Exception as exc:  # noqa: BLE001
        raise DepthcliError(f"cannot load weights from '{path}': {type(exc).__name__}: {exc}".splitlines()[0],
                            "the weights do not match config.json") from None
    finally:
        tf_logging.set_verbosity(old)
    bad = info.get("missing_keys") or info.get("mismatched_keys")
    if bad:
        raise DepthcliError(
            f"checkpoint '{path}' is incompatible: {len(bad)} weights missing or mismatched (e.g. {list(bad)[0]})",
            "the weights do not match config.json",
        )
    model.depthcli_meta = read_model_meta(path, config)
    model.eval()
    return model


def read_model_meta(path: Path, config) -> dict[str, Any]:
    """``depthcli.json`` of a checkpoint folder (``{}`` when absent), with a checked ``input_size``.

    The size comes from the file, else from config.json's backbone ``image_size``;
    either way it must be a positive multiple of the patch size.
    """
    from depthcli.validate import check_multiple

    meta_path = Path(path) / META_FILE
    meta: Any = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DepthcliError(f"'{meta_path}' is not valid JSON ({exc})",
                                "restore it, or delete it to use config.json alone") from None
        if not isinstance(meta, dict):
            raise DepthcliError(f"'{meta_path}' must hold a JSON object", "restore it, or delete it to use config.json alone")
    if meta.get("input_size") is not None:
        meta["input_size"] = check_multiple(meta["input_size"], f"'{meta_path}': input_size", PATCH)
    else:
        size = getattr(getattr(config, "backbone_config", None), "image_size", 518)
        meta["input_size"] = check_multiple(size, f"'{Path(path) / 'config.json'}': backbone image_size", PATCH)
    return meta


def model_input_size(model) -> int:
    """The side (pixels, multiple of 14) the model predicts at."""
    meta = getattr(model, "depthcli_meta", None) or {}
    size = int(meta.get("input_size") or getattr(model.config.backbone_config, "image_size", 518))
    return max(PATCH, size // PATCH * PATCH)


def save_model(model, folder: Path, meta: dict[str, Any] | None = None) -> None:
    """``save_pretrained`` (safetensors + config.json) + ``depthcli.json``, written atomically.

    The folder is built beside ``folder`` and renamed into place, so a reader
    never sees a half-written checkpoint.
    """
    import shutil
    import tempfile

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        from transformers.utils import logging as tf_logging

        inner = getattr(model, "module", model)
        tf_logging.disable_progress_bar()
        inner.save_pretrained(tmp, safe_serialization=True)
        full = dict(getattr(inner, "depthcli_meta", None) or {})
        full.update(meta or {})
        full["output"] = "relative affine-invariant disparity (larger = nearer)"
        full["input_normalisation"] = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        (tmp / META_FILE).write_text(json.dumps(full, indent=1))
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / "x")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def normalize_images(images):
    """``[B, 3, H, W]`` float in [0, 1] -> ImageNet-normalised tensor."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)[None, :, None, None]
    return (images - mean) / std


def forward_disparity(model, images):
    """Relative disparity ``[B, H, W]`` for ``[B, 3, H, W]`` images in [0, 1] (H, W multiples of 14)."""
    return model(pixel_values=normalize_images(images)).predicted_depth


def inference_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Model input (h, w): short side ~``size``, aspect kept, both multiples of 14."""
    scale = size / min(height, width)
    h = max(PATCH, int(round(height * scale / PATCH)) * PATCH)
    w = max(PATCH, int(round(width * scale / PATCH)) * PATCH)
    return h, w


def predict_disparity(model, image_rgb: np.ndarray, size: int | None = None) -> np.ndarray:
    """Relative disparity ``[H, W]`` float32 at the input resolution of one RGB uint8 image.

    The image is resized (aspect kept, short side ``size``) for the model and the
    prediction resized back bilinearly. Values are affine-invariant disparity.
    """
    import cv2
    import torch

    h0, w0 = image_rgb.shape[:2]
    h, w = inference_shape(h0, w0, size or model_input_size(model))
    img = cv2.resize(image_rgb, (w, h), interpolation=cv2.INTER_AREA if h < h0 else cv2.INTER_LINEAR)
    device = next(model.parameters()).device
    x = torch.from_numpy(img).permute(2, 0, 1)[None].to(device).float() / 255.0
    with torch.inference_mode():
        d = forward_disparity(model, x)[0].float().cpu().numpy()
    return cv2.resize(d, (w0, h0), interpolation=cv2.INTER_LINEAR).astype(np.float32)
