"""Gaussian splats: the rasteriser (:func:`depthcli.splat.render.render`), model and trainer.

Import-light on purpose: ``import depthcli.splat`` loads no torch or gsplat; import the
submodule you need (``from depthcli.splat.render import render``).
"""
