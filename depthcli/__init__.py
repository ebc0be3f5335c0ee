"""depthcli: a command-line toolkit for depth data.

Importing this package is cheap: torch, gsplat, pycolmap and transformers are
imported inside the functions that need them, never at import time.
"""

import os as _os

__version__ = "0.1.0"

# torch's OpenMP threads spin while waiting for work by default; on small,
# shared CPUs (2 cores, CI runners) that makes every CPU training step several
# times slower. Passive waiting costs nothing measurable on an idle machine.
# It must be set before torch is first imported; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
