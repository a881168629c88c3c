"""When this process first imported qkv: a command run from the shell (``qkv train
--max-time``) counts its time budget from here, so its imports (torch's among them) count."""

from __future__ import annotations

import time

#: ``time.monotonic()`` when ``qkv`` was first imported.
STARTED = time.monotonic()

__all__ = ["STARTED"]
