"""Reading depthcli's own checkpoints: tensors and plain data only, never code.

``torch.load(weights_only=True)`` accepts tensors, numbers, strings and containers of
them; a file holding anything else (a pickled object whose unpickling could run code)
is refused with one line and never executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthcli.errors import DepthcliError


def load_tensors_only(path: Path, what: str = "checkpoint") -> Any:
    """Load ``path`` with ``weights_only=True``.

    Raises :class:`DepthcliError` when the file holds more than tensors and plain data;
    other failures (a damaged or truncated file) propagate, so callers can fall back to
    an older checkpoint or say the file cannot be read.
    """
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DepthcliError(f"--resume: {what} '{path}' holds more than tensors and plain data; refusing to load it",
                            "depthcli never unpickles objects; start again with --overwrite") from None
