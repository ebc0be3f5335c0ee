"""depthcli: a command-line toolkit for depth data.

Importing this package is cheap: torch, gsplat, pycolmap and transformers are
imported inside the functions that need them, never at import time.
"""

__version__ = "0.1.0"
