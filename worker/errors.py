"""Errors the worker package raises."""


class InferqError(Exception):
    """Root of every error inferq's worker side raises."""


class EmbeddedServerError(InferqError):
    """The embedded Valkey could not be started or stopped."""


class ConfigurationError(InferqError):
    """A setting is missing or contradicts another."""
