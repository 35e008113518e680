"""Operator settings: one typed object, read from `INFERQ_*` environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_MODELS = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class LaneSettings:
    """Batching limits of one lane."""

    max_batch_size: int
    max_wait_ms: float
    token_budget: int
    queue_limit: int


class Settings(BaseSettings):
    """Everything an operator sets. Environment variables: `INFERQ_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="INFERQ_", extra="ignore")

    redis_url: str | None = Field(
        default=None, description="Redis/Valkey URL; unset, the inferq commands start or reuse the embedded Valkey and "
        "library clients refuse to run"
    )
    # Credentials in the URL (redis://user:pass@host) win over these two, as redis-py merges them.
    redis_username: str | None = Field(default=None, description="ACL user, when the URL names none")
    redis_password: SecretStr | None = Field(
        default=None, description="ACL password, when the URL holds none; from the environment only, never logged"
    )
    tls_ca_file: Path | None = Field(
        default=None, description="rediss:// only: PEM CA bundle the server certificate must chain to; unset: system"
    )
    tls_cert_file: Path | None = Field(default=None, description="rediss:// only: PEM client certificate (mutual TLS)")
    tls_key_file: Path | None = Field(default=None, description="rediss:// only: PEM key of the client certificate")
    tls_check_hostname: bool = Field(
        default=True, description="rediss:// only: the server certificate must name the URL's host"
    )
    state_dir: Path = Field(
        default=Path.home() / ".inferq", description="embedded Valkey data, pid file and logs"
    )
    models_dir: Path = Field(default=_REPO_MODELS, description="directory holding triage/ and fraud/")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        default="auto", description="auto takes the policy the model card's accuracy gate enabled"
    )
    kinds: list[Literal["triage", "fraud"]] = Field(
        default=["triage", "fraud"], description="task kinds this worker serves"
    )
    lanes: list[Literal["realtime", "batch"]] = Field(
        default=["realtime", "batch"], description="lanes this worker consumes"
    )
    # Realtime: small batches and a ~2 ms wait, so one fraud call waits little for company.
    realtime_max_batch_size: int = Field(default=32, ge=1, le=4096)
    realtime_max_wait_ms: float = Field(default=2.0, ge=0, le=10_000, description="measured from the oldest task")
    realtime_token_budget: int = Field(default=16_384, ge=1, description="padded tokens (longest x count)")
    realtime_queue_limit: int = Field(default=10_000, ge=1, description="waiting + in flight before overloaded")
    # Batch: large batches for throughput; 20 ms of waiting is nothing against a backfill.
    batch_max_batch_size: int = Field(default=128, ge=1, le=4096)
    batch_max_wait_ms: float = Field(default=20.0, ge=0, le=10_000, description="measured from the oldest task")
    batch_token_budget: int = Field(default=32_768, ge=1, description="padded tokens (longest x count)")
    batch_queue_limit: int = Field(default=200_000, ge=1, description="waiting + in flight before overloaded")
    batch_every: int = Field(
        default=4, ge=1, description="serve one batch-lane batch after at most this many realtime batches"
    )
    # Tasks one XREADGROUP returns arrive within a millisecond; 10 ms groups a few fetches by length
    # without letting a long note wait behind many later short ones (the oldest task always goes next).
    bucket_window_ms: float = Field(
        default=10.0, ge=0, description="length bucketing considers tasks queued this close to the oldest"
    )
    prepare_overlap: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="prepare the next batch during the forward pass: auto = on CUDA only (on a CPU the "
        "GIL-bound preparation slowed the forward pass 2-3x, so they take turns)",
    )
    fetch_count: int = Field(default=256, ge=1, description="entries one XREADGROUP may take")
    claim_idle_ms: int = Field(
        default=15_000, ge=100, description="idle time after which a dead worker's tasks are taken over"
    )
    max_deliveries: int = Field(default=3, ge=1, description="deliveries before a task goes to the dead-letter stream")
    # Stock Celery producers (kombu's Redis transport) push onto lists named after their queue; these
    # are moved into lane streams (worker/celery_lists.py). `by_kind`: only inferq tasks, each to its
    # kind's default lane, so another app's tasks on a shared queue such as `celery` are never taken.
    celery_lists: dict[str, Literal["realtime", "batch", "by_kind"]] = Field(
        default={"realtime": "realtime", "batch": "batch", "celery": "by_kind"},
        description="kombu Redis list queues moved into lane streams: queue name -> lane or by_kind; {} turns it off",
    )
    celery_list_batch: int = Field(default=64, ge=1, le=10_000, description="list messages one bridge call moves")
    celery_list_poll_ms: int = Field(
        default=50, ge=5, le=1000,
        description="longest wait between bridge calls: the fetch blocks at most this long while lists are bridged",
    )
    result_ttl_s: int = Field(default=86_400, ge=1, description="how long a task id is remembered as answered")
    result_stream_maxlen: int = Field(default=1_000_000, ge=1, description="approximate cap of each result stream")
    drain_timeout_s: float = Field(
        default=25.0, gt=0, description="SIGTERM drain; keep below Kubernetes terminationGracePeriodSeconds (30)"
    )
    client_retry_s: float = Field(
        default=10.0, ge=0, le=3600,
        description="producer clients retry a Redis that does not answer (restart, failover) for this long, "
        "then raise RedisUnavailable",
    )
    fraud_review_threshold: float | None = Field(
        default=None, ge=0, le=1, description="score at or above which fraud says review; unset: model card"
    )
    fraud_decline_threshold: float | None = Field(
        default=None, ge=0, le=1, description="score at or above which fraud says decline; unset: model card"
    )
    triage_review_below: float = Field(
        default=0.6, ge=0, le=1,
        description="a triage result whose top probability is below this says needs_review (with explain)",
    )
    nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description="added to the worker process's niceness at start; 10 for batch-only workers that share "
        "a machine with a realtime worker, so the realtime lane gets the CPU first",
    )
    metrics_port: int = Field(default=9808, ge=0, le=65535, description="Prometheus and health probes; 0 disables")
    metrics_max_tenants: int = Field(
        default=50, ge=0, le=10_000,
        description="tenants with their own label on the usage metrics; later ones count under tenant=\"_other\"",
    )
    # A year and a month: a month's bill can be set against the same month of the year before.
    usage_retention_days: int = Field(
        default=400, ge=1, le=3650,
        description="days a day's usage hash (inferq:usage:{day}) is kept after its last write",
    )
    price_per_device_hour: float | None = Field(
        default=None, ge=0, description="price of one device-hour, for `inferq usage`'s cost per 1,000 inferences"
    )
    log_level: str = Field(default="INFO")
    log_json: bool = Field(default=True, description="structlog JSON lines; false for console rendering")
    remote_control: bool = Field(
        default=True,
        description="answer Celery remote control (`celery inspect`, `celery status`, `celery control`) and send "
        "worker heartbeat events, over Celery's own Redis keys and channels",
    )
    task_events: bool = Field(
        default=False, description="send Celery task events from the start (`celery worker -E`); Flower turns them on"
    )
    signing_keys: SecretStr | None = Field(
        default=None,
        description="HMAC keys as comma-separated kid:base64 pairs, several at once while rotating; unset: "
        "signing off (worker/signing.py)",
    )
    signing_key_id: str | None = Field(default=None, description="kid this process signs with; unset: the first key")
    # Five minutes covers clock skew between hosts and a producer's retries, and is still short
    # enough that the replay markers (kept twice as long) stay few.
    signing_window_s: float = Field(
        default=300, gt=0, le=86_400, description="largest gap between a signature's time and the entry's queue time"
    )
    signing_required: bool | None = Field(
        default=None, description="refuse unsigned entries; unset: true when signing keys are set"
    )

    def lane(self, name: str) -> LaneSettings:
        """Batching limits of the named lane."""
        if name not in ("realtime", "batch"):
            raise ValueError(f"unknown lane {name!r}")
        return LaneSettings(
            max_batch_size=getattr(self, f"{name}_max_batch_size"),
            max_wait_ms=getattr(self, f"{name}_max_wait_ms"),
            token_budget=getattr(self, f"{name}_token_budget"),
            queue_limit=getattr(self, f"{name}_queue_limit"),
        )
