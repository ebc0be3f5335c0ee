"""``convert``: any supported source -> one depth dataset.

:func:`convert` detects the source layout (or takes ``--from``), builds the
dataset in a temporary folder and renames it into place when complete.

One module per source family does the conversion (plan frames, decode,
undistort, write); the file formats themselves are read by ``depthcli.io``:

=================  ==============================  ===============================
family module      kinds (``--from``)              formats read by
=================  ==============================  ===============================
convert.colmap     colmap                          io.colmap
convert.rgbd       tum, 7scenes, nyu, kitti,       io.rgbd, io.depth_files
                   folder
convert.hypersim   hypersim                        io.hypersim
convert.vkitti2    vkitti2                         io.vkitti2
convert.tartanair  tartanair                       io.tartanair
convert.irs        irs                             io.irs (OpenEXR)
convert.blendedmvs blendedmvs                      io.mvsnet, io.depth_files
convert.scannet    scannet                         io.rgbd
convert.nerfstudio nerfstudio (transforms.json)    io.nerfstudio
=================  ==============================  ===============================

A family module provides ``KINDS``, ``detect(source) -> (kind, reason) | None``
and ``convert_source(cfg, folder, kind) -> summary``. Adding a family is one
entry in :data:`SOURCE_FAMILIES`; detection asks the families in its order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError

__all__ = ["ConvertConfig", "convert", "detect_source", "SOURCE_FAMILIES", "SOURCE_KINDS"]

#: family module (``depthcli.convert.<name>``) -> the kinds it converts, in detection order.
SOURCE_FAMILIES: dict[str, tuple[str, ...]] = {
    "nerfstudio": ("nerfstudio",),  # first: its images/ + depth/ would also pass as a generic folder
    "colmap": ("colmap",),
    "hypersim": ("hypersim",),
    "vkitti2": ("vkitti2",),
    "tartanair": ("tartanair",),
    "irs": ("irs",),
    "blendedmvs": ("blendedmvs",),
    "scannet": ("scannet",),
    "rgbd": ("tum", "7scenes", "nyu", "kitti", "folder"),
}
SOURCE_KINDS = ("auto",) + tuple(k for kinds in SOURCE_FAMILIES.values() for k in kinds)


def _family_of(kind: str) -> str:
    for family, kinds in SOURCE_FAMILIES.items():
        if kind in kinds:
            return family
    raise DepthcliError(f"unknown source kind '{kind}'", f"use one of {', '.join(SOURCE_KINDS)}")


def _family_module(family: str):
    # Plain imports (not importlib) so the import graph stays visible to tools and tests.
    if family == "colmap":
        from depthcli.convert import colmap as module
    elif family == "rgbd":
        from depthcli.convert import rgbd as module
    elif family == "hypersim":
        from depthcli.convert import hypersim as module
    elif family == "vkitti2":
        from depthcli.convert import vkitti2 as module
    elif family == "tartanair":
        from depthcli.convert import tartanair as module
    elif family == "irs":
        from depthcli.convert import irs as module
    elif family == "blendedmvs":
        from depthcli.convert import blendedmvs as module
    elif family == "scannet":
        from depthcli.convert import scannet as module
    elif family == "nerfstudio":
        from depthcli.convert import nerfstudio as module
    else:  # pragma: no cover - a SOURCE_FAMILIES entry without its import here
        raise DepthcliError(f"internal: no module for source family '{family}'")
    return module


def detect_source(source: Path) -> tuple[str, str]:
    """Return (kind, reason) for a source folder, or raise a clear error."""
    source = Path(source)
    if not source.exists():
        raise DepthcliError(f"source '{source}' does not exist")
    if not source.is_dir():
        raise DepthcliError(f"source '{source}' is not a folder", "pass a COLMAP project or an RGB-D capture folder")
    if not any(source.iterdir()):
        raise DepthcliError(f"source '{source}' is empty")
    for family in SOURCE_FAMILIES:
        found = _family_module(family).detect(source)
        if found is not None:
            return found
    raise DepthcliError(
        f"cannot tell what '{source}' holds: no COLMAP model (sparse/0, cameras.bin|txt), Hypersim, "
        "Virtual KITTI 2, TartanAir, IRS, BlendedMVS or ScanNet layout, "
        "TUM lists (rgb.txt, depth.txt), 7-Scenes frames (frame-*.depth.png) or color/ + depth/ folders",
        f"pass --from {'|'.join(SOURCE_KINDS[1:])}",
    )


def convert(cfg: ConvertConfig) -> dict[str, Any]:
    """Convert ``cfg.source`` into a dataset at ``cfg.out``; returns a summary dict."""
    from depthcli.io.atomic import atomic_output_dir, check_output_dir

    from depthcli.validate import check_choice

    check_choice(cfg.source_kind, "source kind (--from)", SOURCE_KINDS)
    cfg.validate()
    check_output_dir(cfg.out, cfg.overwrite, inputs=[cfg.source, cfg.images, cfg.intrinsics_file, cfg.camera_parameters])
    if cfg.source_kind == "auto":
        kind, reason = detect_source(cfg.source)  # said in the summary: a refused run prints one line only
    else:
        kind, reason = cfg.source_kind, "--from"
        if not Path(cfg.source).exists():
            raise DepthcliError(f"source '{cfg.source}' does not exist")
    if Path(cfg.out).absolute().resolve() == Path(cfg.source).absolute().resolve():
        raise DepthcliError("output folder is the source folder", "inputs are never modified: choose another output")
    module = _family_module(_family_of(kind))
    with atomic_output_dir(cfg.out, cfg.overwrite) as tmp:
        summary = module.convert_source(cfg, tmp, kind)
    return {"source": str(cfg.source), "detected": kind, "detected_by": reason, "out": str(cfg.out), **summary}
