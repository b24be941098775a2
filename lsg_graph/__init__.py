"""lsg-graph: latent-space geometry of deep generative models (Arvanitidis, Hansen, Hauberg, ICLR 2018)."""

from __future__ import annotations

__version__ = "0.1.0"
