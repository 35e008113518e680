"""Errors raised by the inference engine."""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class InputError(EngineError):
    """An input the model cannot take (wrong type, empty, too long to chunk)."""


class ModelLoadError(EngineError):
    """A model directory or checkpoint that cannot be loaded into our modules."""


class PrecisionUnavailable(EngineError):
    """A precision policy this hardware or this model cannot run."""
