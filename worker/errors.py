"""Errors the worker package raises."""


class InferqError(Exception):
    """Root of every error inferq's worker side raises."""


class EmbeddedServerError(InferqError):
    """The embedded Valkey could not be started or stopped."""


class ConfigurationError(InferqError):
    """A setting is missing or contradicts another."""


class Overloaded(InferqError):
    """A lane holds as many tasks as its limit allows; the task was refused without queueing."""

    def __init__(self, lane: str, limit: int, queued: tuple[str, ...] = ()) -> None:
        self.lane = lane
        self.limit = limit
        self.queued = queued  # task ids of the same call that were queued before the lane filled
        super().__init__(f"lane {lane!r} is over its limit of {limit} tasks")


class ServerFull(Overloaded):
    """Redis refused the write because it is out of memory (maxmemory); nothing of that chunk was queued."""

    def __init__(self, queued: tuple[str, ...] = ()) -> None:
        InferqError.__init__(self, "Redis is out of memory (maxmemory): the task was not queued")
        self.lane = "memory"
        self.limit = 0
        self.queued = queued  # task ids of the same call that were queued before memory ran out


class RedisUnavailable(InferqError):
    """Redis did not answer within the client's retry time; `.queued` names the tasks known to be queued."""

    def __init__(self, message: str, queued: tuple[str, ...] = ()) -> None:
        self.queued = queued
        super().__init__(message)


class UnknownLane(InferqError):
    """A task was addressed to a queue that is not one of inferq's lanes."""


class ResultTimeout(InferqError, TimeoutError):
    """No result arrived for a task within the time the caller waited."""
