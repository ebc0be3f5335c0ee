"""``depthcli synth OUT``: procedural scenes with exact depth."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = (
    "Render procedural scenes with exact z-depth (metres) into a depth dataset; "
    "optionally also as a COLMAP model (--colmap) and a 7-Scenes RGB-D folder (--rgbd)."
)


def command(
    out: Path = typer.Argument(..., help="Dataset folder to create (scene_XXX/ subfolders when --scenes > 1)."),
    scenes: int = typer.Option(1, help="Number of scenes."),
    frames: int = typer.Option(20, help="Frames per scene (one orbit around the scene)."),
    width: int = typer.Option(320, help="Image width in pixels."),
    height: int = typer.Option(240, help="Image height in pixels."),
    seed: int = typer.Option(0, help="Seed of the first scene (scene i uses seed + i)."),
    style: str = typer.Option("indoor", help="indoor (rooms, 0.5-12 m), outdoor (to ~170 m, sky = invalid) or mixed."),
    colmap: bool = typer.Option(False, "--colmap", help="Also export a COLMAP text model with images (OUT/colmap)."),
    colmap_camera: str = typer.Option("OPENCV", help="COLMAP camera model: PINHOLE, SIMPLE_RADIAL or OPENCV (distorted)."),
    colmap_points: int = typer.Option(3000, help="3D points sampled on visible surfaces."),
    rgbd: bool = typer.Option(False, "--rgbd", help="Also export a 7-Scenes-style RGB-D folder (OUT/rgbd)."),
    depth_format: str = typer.Option("npy", help="Depth files: npy (float32 m) or png16 (uint16 mm)."),
    previews: bool = typer.Option(False, "--previews", help="Write colourised depth previews."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    from depthcli.console import report
    from depthcli.synth.generate import SynthConfig, synthesize

    cfg = SynthConfig(
        out=out, scenes=scenes, frames=frames, width=width, height=height, seed=seed, style=style,
        colmap=colmap, colmap_camera=colmap_camera.upper(), colmap_points=colmap_points, rgbd=rgbd,
        depth_format=depth_format, previews=previews, overwrite=overwrite,
    )
    report(synthesize(cfg), "synth", as_json=json)
