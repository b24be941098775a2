"""Compatibility name: the model now lives in the package lsg_graph.model (import from there).

Only re-exports; nothing is defined here.
"""

from __future__ import annotations

from lsg_graph.model import *  # noqa: F403
from lsg_graph.model import __all__  # noqa: F401
