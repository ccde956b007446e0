"""``import lrkeeper``: the client under a name no training script's own ``client.py`` shadows.

The repository keeps the client in ``client/``; pyproject.toml installs this
directory as the top-level package ``lrkeeper``, so every public name here is
the very object ``client`` exports (``lrkeeper.RemoteLRScheduler is
client.RemoteLRScheduler``) and both names may be used side by side.
"""

from client import *  # noqa: F403 -- the same public surface, under __all__ below
from client import __all__ as __all__
