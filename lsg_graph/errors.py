"""Exceptions and warnings raised by lsg-graph; every library error derives from LsgGraphError."""

from __future__ import annotations


class LsgGraphError(Exception):
    """Base class of every error lsg-graph raises on purpose (the CLI prints these as one line)."""


class InvalidInput(LsgGraphError, ValueError):
    """An argument, array or file content is not what was expected; the message names it."""


class ArtifactError(LsgGraphError):
    """A saved artifact is missing, corrupt, truncated, foreign or of an unsupported version."""


class DecoderError(LsgGraphError, ValueError):
    """A decoder returned the wrong shape or non-finite values."""


class DisconnectedGraph(LsgGraphError):
    """The latent graph has several connected components and joining them was refused."""


class NotFittedError(LsgGraphError, ValueError, AttributeError):
    """An estimator or model was used before it was fitted or trained."""


class ConvergenceWarning(UserWarning):
    """An iterative method stopped before converging; the message names the parameter to raise."""


class DisconnectedGraphWarning(UserWarning):
    """The latent graph had several components and was joined by bridges; the message says what to raise."""
