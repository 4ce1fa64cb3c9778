"""The TaskQueue, WorkerPool and TaskSchedule custom resources as pydantic models.

These models are the single source of truth for the resources: the CRD YAML in
``crds/`` (OpenAPI schema, defaults, CEL rules) and ``docs/crd-reference.md`` are
generated from them, and the operator parses what it reads from the API server
with them. Field names are the camelCase names users write in YAML; the Python
attributes are their snake_case twins.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, JsonValue, WithJsonSchema, field_validator, model_validator

from celeriac.protocol import cronfields, jetstream, names
from celeriac.protocol.envelope import check_task_name
from celeriac.protocol.kubeschema import (
    CONDITIONS_LIST,
    ZERO_DURATION_CEL,
    Condition,
    Duration,
    KubeModel,
    cel,
    object_default,
    parse_duration,
    validations,
)
from celeriac.protocol.podfields import (
    ENV_NAME_PATTERN,
    Affinity,
    Annotations,
    EnvFromSource,
    EnvVarSource,
    Labels,
    PodSecurityContext,
    Quantities,
    Toleration,
)
from celeriac.protocol.webhooks import WebhookTarget, webhook_target

GROUP = "celeriac.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# A Python module path with an optional ":attribute", as `celeriac worker -A` takes it.
APP_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_.]*)?$"
QueueName = Annotated[str, Field(pattern=names.QUEUE_NAME_PATTERN, max_length=63)]

# ---------------------------------------------------------------------------- TaskQueue


# Workers heartbeat every third of ackWait (at most every 100 ms), and JetStream counts
# in whole nanoseconds: below a second a task is redelivered while it runs, or the
# value rounds to zero and silently becomes the server's default.
MIN_ACK_WAIT = 1.0
ACK_WAIT_MESSAGE = "ackWait must be at least 1s"
# Longest duration JetStream takes (its nanosecond counts overflow at ~292 years).
MAX_DURATION = 100 * 365 * 86_400
MAX_DURATION_MESSAGE = "must be at most 36500d (100 years)"


class Delivery(KubeModel):
    """How tasks are handed to workers and redelivered."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                # CEL's duration() has no days; a value in days is long enough anyway.
                "self.ackWait.contains('d') || duration(self.ackWait) >= duration('1s')",
                ACK_WAIT_MESSAGE,
                ".ackWait",
            ),
            cel(
                "self.maxDeliveries != 0",
                "maxDeliveries must be -1 or at least 1",
                ".maxDeliveries",
            ),
            cel(
                "self.maxDeliveries == -1 || !has(self.retryBackoff) || "
                "self.maxDeliveries > size(self.retryBackoff)",
                "maxDeliveries must be -1 or more than the number of retryBackoff steps",
                ".maxDeliveries",
            ),
        )
    )

    ack_wait: Duration = Field(
        default="30s",
        description="How long a delivered task may go without an ack or progress heartbeat "
        "before it is redelivered.",
    )
    max_deliveries: int = Field(
        default=jetstream.DEFAULT_MAX_DELIVERIES,
        ge=-1,
        description="Deliveries of one task before JetStream stops delivering it; the "
        "worker then dead-letters it as poison. Keep it above the tasks' max_retries + 1 "
        "(a task whose retries it cuts short is dead-lettered with reason max_deliveries). "
        "-1: unlimited.",
    )
    max_ack_pending: int = Field(
        default=10_000, ge=1, description="Tasks that may be in flight at once over all workers."
    )
    retry_backoff: list[Duration] = Field(
        default_factory=list,
        max_length=32,
        description="Delays before redelivering a task whose worker vanished (ack wait "
        "expired), one per attempt; the last repeats. Task retries use the task's own "
        "retry_backoff.",
    )

    @model_validator(mode="after")
    def _check(self) -> Delivery:
        if parse_duration(self.ack_wait) < MIN_ACK_WAIT:
            raise ValueError(ACK_WAIT_MESSAGE)
        if self.max_deliveries == 0:
            raise ValueError("maxDeliveries must be -1 or at least 1")
        if self.max_deliveries != -1 and self.max_deliveries <= len(self.retry_backoff):
            raise ValueError(
                "maxDeliveries must be -1 or more than the number of retryBackoff steps"
            )
        return self


class DeadLetter(KubeModel):
    """How long dead-lettered tasks are kept."""

    max_age: Duration = Field(
        default="30d", description="Age after which dead letters are discarded (0s: forever)."
    )


class QueueNats(KubeModel):
    """Which NATS this queue lives on, when not the operator's default."""

    url: str | None = Field(
        default=None,
        pattern=r"^(nats|tls|ws|wss)://\S+$",
        max_length=2048,
        description="NATS URL (default: the operator's --nats-url).",
    )


WebhookEventName = Literal["succeeded", "failed", "dead_lettered"]


def _default_events() -> list[WebhookEventName]:
    return ["succeeded", "failed"]


class QueueWebhooks(KubeModel):
    """The queue's default completion webhook, for its tasks without a webhook option."""

    url: str = Field(
        pattern=r"^https?://\S+$",
        max_length=2048,
        description="Where to POST: an http:// or https:// URL.",
    )
    events: list[WebhookEventName] = Field(
        default_factory=_default_events,
        min_length=1,
        max_length=3,
        description="When to POST: succeeded, failed, dead_lettered.",
    )
    secret_name: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9._-]{1,253}$",
        description="Name of the secret to sign with, in the webhook dispatcher's secrets "
        "file (its Secret's key).",
    )

    @model_validator(mode="after")
    def _check(self) -> QueueWebhooks:
        self.target()  # the same rules as the task option
        return self

    def target(self) -> WebhookTarget:
        """The target workers use for the queue's tasks."""
        return webhook_target({"url": self.url, "events": self.events, "secret": self.secret_name})


class TaskQueueSpec(KubeModel):
    """A queue: its work stream, durable consumer and dead-letter stream."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"!self.duplicateWindow.matches({ZERO_DURATION_CEL})",
                "duplicateWindow must be longer than zero",
                ".duplicateWindow",
            ),
        )
    )

    queue: QueueName | None = Field(
        default=None,
        description="Queue name tasks are sent to (default: the resource's name). "
        "1-63 lowercase letters, digits, '-' or '_'.",
    )
    max_age: Duration = Field(
        default="7d", description="Discard tasks older than this (0s: never)."
    )
    max_messages: int = Field(default=-1, ge=-1, description="Most tasks queued (-1: no limit).")
    max_bytes: int = Field(default=-1, ge=-1, description="Most bytes queued (-1: no limit).")
    replicas: int = Field(default=1, ge=1, le=5, description="JetStream stream replicas.")
    duplicate_window: Duration = Field(
        default="2m",
        description="Window in which a resubmitted task id is enqueued only once.",
    )
    delivery: Delivery = Field(default_factory=Delivery, json_schema_extra=object_default(Delivery))
    dead_letter: DeadLetter = Field(
        default_factory=DeadLetter, json_schema_extra=object_default(DeadLetter)
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="Retain keeps the streams and their tasks when the TaskQueue is deleted; "
        "Delete removes them.",
    )
    nats: QueueNats | None = None
    webhooks: QueueWebhooks | None = None

    @model_validator(mode="after")
    def _check(self) -> TaskQueueSpec:
        window, max_age = parse_duration(self.duplicate_window), parse_duration(self.max_age)
        if window <= 0:
            raise ValueError("duplicateWindow must be longer than zero")
        durations = {
            "maxAge": max_age,
            "duplicateWindow": window,
            "delivery.ackWait": parse_duration(self.delivery.ack_wait),
            "deadLetter.maxAge": parse_duration(self.dead_letter.max_age),
        }
        durations |= {
            f"delivery.retryBackoff[{i}]": parse_duration(d)
            for i, d in enumerate(self.delivery.retry_backoff)
        }
        for field, seconds in durations.items():
            if seconds > MAX_DURATION:
                raise ValueError(f"{field} {MAX_DURATION_MESSAGE}")
        if max_age > 0 and window > max_age:
            # JetStream refuses such a stream: a task could outlive its own dedup entry.
            raise ValueError(
                f"duplicateWindow ({self.duplicate_window}) must not be longer than "
                f"maxAge ({self.max_age})"
            )
        return self

    def queue_name(self, resource_name: str) -> str:
        """The queue this spec declares: ``spec.queue`` or the resource's name."""
        return names.check_queue_name(self.queue or resource_name)

    def to_queue_settings(self) -> jetstream.QueueSettings:
        """The JetStream settings this spec asks for."""
        return jetstream.QueueSettings(
            max_age_seconds=parse_duration(self.max_age),
            max_messages=self.max_messages,
            max_bytes=self.max_bytes,
            replicas=self.replicas,
            duplicate_window_seconds=parse_duration(self.duplicate_window),
            ack_wait_seconds=parse_duration(self.delivery.ack_wait),
            max_deliveries=self.delivery.max_deliveries,
            max_ack_pending=self.delivery.max_ack_pending,
            backoff_seconds=tuple(parse_duration(d) for d in self.delivery.retry_backoff),
            dead_letter_max_age_seconds=parse_duration(self.dead_letter.max_age),
        )


class TaskQueueStatus(KubeModel):
    """What the operator last saw of the queue."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    queue: str | None = Field(default=None, description="The queue name in use.")
    stream: str | None = Field(default=None, description="The work stream.")
    dead_letter_stream: str | None = None
    consumer: str | None = None
    backlog: int | None = Field(default=None, description="Tasks waiting for a worker.")
    in_flight: int | None = Field(default=None, description="Tasks delivered, not yet acked.")
    redelivered: int | None = Field(default=None, description="In-flight tasks redelivered.")
    dead_letters: int | None = Field(default=None, description="Tasks in the dead-letter stream.")


# ---------------------------------------------------------------------------- WorkerPool


class Autoscaling(KubeModel):
    """Scale the pool on its queues' backlog, to zero and back."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.minReplicas <= self.maxReplicas",
                "minReplicas must not exceed maxReplicas",
                ".minReplicas",
            ),
            cel(
                "!(has(self.targetBacklogPerReplica) && has(self.targetDrainTime))",
                "set either targetBacklogPerReplica or targetDrainTime, not both",
                ".targetDrainTime",
            ),
            cel(
                f"!has(self.targetDrainTime) || !self.targetDrainTime.matches({ZERO_DURATION_CEL})",
                "targetDrainTime must be longer than zero",
                ".targetDrainTime",
            ),
            cel(
                f"!self.pollInterval.matches({ZERO_DURATION_CEL})",
                "pollInterval must be longer than zero",
                ".pollInterval",
            ),
        )
    )

    enabled: bool = Field(default=True, description="false: use spec.replicas instead.")
    min_replicas: int = Field(default=0, ge=0, le=1000, description="Fewest replicas (0 allowed).")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most replicas.")
    target_backlog_per_replica: int | None = Field(
        default=None,
        ge=1,
        description="Size the pool by backlog alone: tasks (waiting + in flight) per replica. "
        "Unset: replicas follow the measured throughput, and the concurrency is the tasks per "
        "replica assumed until a rate is measured.",
    )
    target_drain_time: Duration | None = Field(
        default=None,
        description="How long waiting tasks may take to drain at the measured per-replica "
        "rate (default 5s); shorter starts more replicas for a burst.",
    )
    scale_down_stabilization: Duration = Field(
        default="60s",
        description="Scale down only after fewer replicas were enough for this long, to "
        "what the mean demand of that window needs.",
    )
    idle_before_zero: Duration = Field(
        default="5m",
        description="With minReplicas 0: scale to zero after the queues were empty this long.",
    )
    poll_interval: Duration = Field(default="2s", description="How often backlog is read.")

    @model_validator(mode="after")
    def _check(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        if self.target_backlog_per_replica is not None and self.target_drain_time is not None:
            raise ValueError("set either targetBacklogPerReplica or targetDrainTime, not both")
        if self.target_drain_time is not None and parse_duration(self.target_drain_time) <= 0:
            raise ValueError("targetDrainTime must be longer than zero")
        if parse_duration(self.poll_interval) <= 0:
            raise ValueError("pollInterval must be longer than zero")
        return self


class Resources(KubeModel):
    """Compute resources of each worker container."""

    limits: Quantities = Field(default_factory=dict)
    requests: Quantities = Field(default_factory=dict)


class EnvVar(KubeModel):
    """An environment variable, as in a Kubernetes container."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    value: str | None = None
    value_from: EnvVarSource | None = None


class PoolNats(KubeModel):
    """How the workers reach NATS, when not the operator's default."""

    url: str | None = Field(
        default=None,
        pattern=r"^(nats|tls|ws|wss)://\S+$",
        max_length=2048,
        description="NATS URL for the workers (default: the operator's --nats-url).",
    )
    credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        description=(
            "Secret mounted into the workers for NATS: any of `nats.creds`, `user` and "
            "`password`, `token`, `ca.crt` (the server's CA), `tls.crt` and `tls.key`."
        ),
    )


class SigningKeysSecret(KubeModel):
    """The Secret holding the keys workers check task signatures with (and sign with)."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Secret in the pool's namespace; mounted as a file, so the operator "
        "needs no read access to it.",
    )
    key: str = Field(
        default="keys",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Its key holding the keys, written `<key id>:<base64 secret>`, comma- or "
        "line-separated, the signing key first (the syntax of CELERIAC_SIGNING_KEYS).",
    )


class WorkerPoolSpec(KubeModel):
    """A Deployment of workers consuming some queues."""

    queues: list[QueueName] = Field(
        min_length=1,
        max_length=32,
        description="Queues the workers consume.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    app: str = Field(
        pattern=APP_PATTERN,
        max_length=512,
        description="Module defining the tasks, optionally `module:attribute` (worker -A).",
    )
    image: str = Field(min_length=1, max_length=1024, description="Worker container image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    concurrency: int = Field(default=10, ge=1, le=10_000, description="Tasks run at once per pod.")
    pool: Literal["asyncio", "threads", "processes"] = Field(
        default="asyncio", description="Where tasks run inside a worker."
    )
    events: bool = Field(
        default=False,
        description="Publish task events (celeriac worker --events) for `celeriac events` "
        "and dashboards.",
    )
    replicas: int = Field(
        default=1, ge=0, le=1000, description="Replicas when autoscaling is off (kubectl scale)."
    )
    autoscaling: Autoscaling | None = None
    resources: Resources | None = None
    env: list[EnvVar] = Field(default_factory=list, max_length=256)
    env_from: list[EnvFromSource] = Field(default_factory=list, max_length=64)
    node_selector: Labels = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    affinity: Affinity | None = None
    service_account_name: str | None = Field(default=None, max_length=253)
    termination_grace_period_seconds: int = Field(
        default=30, ge=0, le=86_400, description="Time a stopping worker has to finish tasks."
    )
    pod_labels: Labels = Field(default_factory=dict)
    pod_annotations: Annotations = Field(default_factory=dict)
    security_context: PodSecurityContext | None = Field(
        default=None,
        description="Pod security context replacing the default (non-root, RuntimeDefault "
        "seccomp).",
    )
    nats: PoolNats | None = None
    signing_keys_secret: SigningKeysSecret | None = Field(
        default=None,
        description="Workers dead-letter task messages not signed with one of these keys "
        "(docs/protocol.md, Signed messages), and sign what they publish with the first.",
    )

    def autoscaling_enabled(self) -> bool:
        """True when the operator, not spec.replicas, sets the replica count."""
        return self.autoscaling is not None and self.autoscaling.enabled


class WorkerPoolStatus(KubeModel):
    """What the operator last saw and decided for the pool."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    replicas: int | None = Field(default=None, description="Pods of the Deployment.")
    ready_replicas: int | None = None
    desired_replicas: int | None = Field(
        default=None, description="Replicas the operator asks for."
    )
    selector: str | None = Field(default=None, description="Label selector of the pods.")
    deployment: str | None = None
    backlog: int | None = Field(default=None, description="Tasks waiting, over all queues.")
    in_flight: int | None = Field(default=None, description="Tasks in flight, over all queues.")
    last_scale_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    last_scale_reason: str | None = None
    last_active_time: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="Last time the queues had work (for idleBeforeZero).",
    )
    scale_down_since: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="Since when fewer replicas would do (for scaleDownStabilization).",
    )
    scale_down_peak: int | None = Field(
        default=None, description="Most replicas needed since scaleDownSince."
    )
    scale_down_demand: float | None = Field(
        default=None,
        description="Tasks in flight summed over the polls since scaleDownSince (with "
        "targetBacklogPerReplica: tasks waiting and in flight).",
    )
    scale_down_polls: int | None = Field(
        default=None, description="Polls since scaleDownSince (scaleDownDemand's count)."
    )
    task_seconds: float | None = Field(
        default=None,
        description="Mean seconds a task runs, as the autoscaler measures it (tasks in "
        "flight / completion rate); it sizes scale-ups by throughput.",
    )
    start_seconds: float | None = Field(
        default=None,
        description="Seconds from a scale-up to its replicas being ready, as the autoscaler "
        "measures it; a scale-up leaves to the ready replicas the backlog they drain by then.",
    )
    starting_since: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="Time of the scale-up whose replicas are not all ready yet.",
    )
    scale_up_from: int | None = Field(
        default=None,
        description="Replicas before the first scale-up of the current burst; the pool "
        "returns to them after the burst when the demand measured since fits them.",
    )
    scale_up_since: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="Time of that scale-up.",
    )


# ---------------------------------------------------------------------------- TaskSchedule


# Any JSON value: the API server keeps it as written, the operator checks it is JSON.
_ANY_JSON = {"x-kubernetes-preserve-unknown-fields": True}
# The zone of a cron, checked as the API server's Go reads IANA names: an unknown name
# fails the rule. "Local" (the server's own zone) would differ from server to server.
TIME_ZONE_RULES = [
    cel("self != 'Local'", "use an IANA time zone name such as Europe/Berlin, not Local"),
    cel(
        "timestamp('2001-01-01T00:00:00Z').getHours(self) >= 0",
        "unknown time zone: use an IANA name such as Europe/Berlin or UTC",
    ),
]
# Whole seconds (the server's scheduler counts in seconds), from 1s.
EVERY_PATTERN = r"^([0-9]+(s|m|h|d))+$"
EVERY_MESSAGE = "every must be at least 1s"


class ScheduledTask(KubeModel):
    """The task each run enqueues."""

    name: str = Field(
        min_length=1,
        max_length=256,
        description="The task's registered name, e.g. app.tasks.send_digest.",
    )
    args: Annotated[
        list[JsonValue],
        WithJsonSchema({"type": "array", "items": _ANY_JSON, "maxItems": 256}),
    ] = Field(default_factory=list, description="Positional arguments (any JSON values).")
    kwargs: Annotated[
        dict[str, JsonValue],
        WithJsonSchema({"type": "object", "additionalProperties": _ANY_JSON, "maxProperties": 256}),
    ] = Field(default_factory=dict, description="Keyword arguments (any JSON values).")
    queue: QueueName = Field(
        default=names.DEFAULT_QUEUE,
        description="Queue the runs are sent to; its TaskQueue must exist.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Headers every run carries (as apply_async(headers=...)).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_task_name(v)


class TaskScheduleSpec(KubeModel):
    """A recurring task: nats-server holds the schedule and fires it, one run per slot."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.cron) != has(self.every)", "set exactly one of cron and every", ".cron"),
            cel(
                "!has(self.every) || self.timeZone == 'UTC'",
                "timeZone applies to cron schedules only, not to every",
                ".timeZone",
            ),
            cel(
                "!has(self.every) || self.every.contains('d') || "
                "duration(self.every) >= duration('1s')",
                EVERY_MESSAGE,
                ".every",
            ),
        )
    )

    task: ScheduledTask
    cron: str | None = Field(
        default=None,
        max_length=256,
        description="When to run: 5 fields (minute hour day-of-month month day-of-week), "
        "6 fields (second first), or @hourly, @daily, @weekly, @monthly, @yearly.",
        json_schema_extra=validations(*cronfields.cel_rules()),
    )
    every: str | None = Field(
        default=None,
        max_length=32,
        pattern=EVERY_PATTERN,
        description="Instead of cron: run at this interval, whole seconds from 1s (30s, 5m, "
        "1h30m).",
    )
    time_zone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="IANA time zone the cron is read in (Europe/Berlin); daylight saving "
        "follows the zone.",
        json_schema_extra=validations(*TIME_ZONE_RULES),
    )
    suspend: bool = Field(default=False, description="true: no runs until set back to false.")
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = Field(
        default="Allow",
        description="While the previous run is unfinished: Allow runs anyway, Forbid skips "
        "the slot, Replace revokes the previous run.",
    )
    starting_deadline: Duration | None = Field(
        default=None,
        description="How long after its slot a run may still start; later it expires "
        "unrun (default: one interval, so missed runs never pile up).",
    )
    jitter: Duration = Field(
        default="0s", description="Delay each run by a random time up to this long."
    )
    nats: QueueNats | None = Field(
        default=None, description="The NATS of the task's queue, when not the operator's default."
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return None if v is None else cronfields.check(v)

    @model_validator(mode="after")
    def _check(self) -> TaskScheduleSpec:
        if (self.cron is None) == (self.every is None):
            raise ValueError("set exactly one of cron and every")
        if self.every is not None and self.time_zone != "UTC":
            raise ValueError("timeZone applies to cron schedules only, not to every")
        if self.every is not None and parse_duration(self.every) < 1:
            raise ValueError(EVERY_MESSAGE)
        if self.time_zone == "Local":
            raise ValueError("use an IANA time zone name such as Europe/Berlin, not Local")
        return self


class LastRun(KubeModel):
    """The run enqueued for the latest slot."""

    id: str = Field(description="Its task id: <namespace>.<name>.<slot as YYYYMMDDTHHMMSSZ>.")
    state: str | None = Field(
        default=None, description="PENDING, STARTED, SUCCESS, FAILURE, RETRY or REVOKED."
    )


class TaskScheduleStatus(KubeModel):
    """What the workers recorded of the schedule, and when it fires next."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    schedule: str | None = Field(
        default=None, description="The schedule as nats-server holds it (6-field cron or @every)."
    )
    queue: str | None = None
    last_schedule_time: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="The latest slot handled: run, or skipped by concurrencyPolicy Forbid.",
    )
    last_run: LastRun | None = None
    next_schedule_time: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When the server fires next (none while suspended).",
    )
    runs: int | None = Field(default=None, description="Runs enqueued.")
    skips: int | None = Field(default=None, description="Slots skipped (concurrencyPolicy Forbid).")
    last_skip_reason: str | None = None


# Rules on the whole object: CEL at the root may read metadata.name.
TASKQUEUE_ROOT_RULES: list[dict[str, str]] = [
    cel(
        f"has(self.spec.queue) || self.metadata.name.matches('{names.QUEUE_NAME_PATTERN}')",
        "metadata.name is not a valid queue name (1-63 lowercase letters, digits, '-' or '_'); "
        "rename the TaskQueue or set spec.queue",
    ),
    # The queue in use is spec.queue, else the name: writing the name into spec.queue
    # changes nothing and is allowed; any other change is not.
    cel(
        "(has(self.spec.queue) ? self.spec.queue : self.metadata.name) == "
        "(has(oldSelf.spec.queue) ? oldSelf.spec.queue : oldSelf.metadata.name)",
        "spec.queue is immutable: create a new TaskQueue instead",
        ".spec.queue",
    ),
]
# A pool's name is the value of its pods' celeriac.io/pool label: at most 63 characters.
WORKERPOOL_ROOT_RULES: list[dict[str, str]] = [
    cel(
        "size(self.metadata.name) <= 63",
        "metadata.name must be at most 63 characters: it labels the pool's pods",
    ),
]
# A schedule is named <namespace>.<name> on the server: the name must be a DNS label.
TASKSCHEDULE_ROOT_RULES: list[dict[str, str]] = [
    cel(
        "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')",
        "metadata.name must be a DNS label (at most 63 lower-case letters, digits and '-', "
        "no '.'): it names the schedule and its runs' ids",
    ),
]
