"""The gateway's HTTP API (FastAPI): submit, read, revoke, queues, hooks, health, metrics.

Every submit goes through the SDK (``Celeriac.asend_task``), so the gateway refuses
what ``send_task`` refuses; one app, hence one NATS connection, serves the process.
Every refusal is problem details (``celeriac.gateway.problems``), never a bare 500.
"""

# No "from __future__ import annotations": FastAPI reads the routes' annotations at run
# time, and the local alias Caller must be a value then, not a string.
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from nats.errors import Error as NatsError
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.exceptions import HTTPException

from celeriac import __version__
from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.exceptions import CeleriacError, QueueNotFoundError, ResultTimeoutError
from celeriac.exceptions import ScheduleNotSupported as ScheduleNotSupportedError
from celeriac.gateway import models
from celeriac.gateway.access import Access, Grant, Hook
from celeriac.gateway.checking import culprits
from celeriac.gateway.metrics import Metrics
from celeriac.gateway.middleware import BodyLimit, CountRequests
from celeriac.gateway.problems import (
    MEDIA_TYPE,
    FieldError,
    Problem,
    forbidden,
    from_validation,
    invalid,
    malformed,
    not_found,
    unauthorized,
    unavailable,
    unknown_queue,
)
from celeriac.gateway.settings import MAX_WAIT, Settings
from celeriac.inspection import UnknownQueueError, queue_status
from celeriac.protocol import names
from celeriac.protocol.envelope import ResultRecord
from celeriac.streams import work_queues

log = logging.getLogger("celeriac.gateway")
_bearer = HTTPBearer(auto_error=False, description="a token from the gateway's tokens document")
_PROBLEM = {"model": models.ProblemDocument, "content": {MEDIA_TYPE: {}}}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, **_PROBLEM}
    for code, text in [(400, "malformed JSON"), (401, "no token, or an unknown one"),
                       (403, "queue not allowed"), (413, "body over --max-body"),
                       (422, "invalid fields"), (503, "NATS unavailable")]
}  # fmt: skip


def _problem_response(problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem.document(), problem.status, headers=dict(problem.headers), media_type=MEDIA_TYPE
    )


def _status(task_id: str, record: ResultRecord | None) -> models.TaskStatus:
    if record is None:
        return models.TaskStatus(id=task_id, state="PENDING")
    return models.TaskStatus(
        id=task_id, state=record.state.value, task=record.task, result=record.result,
        error=record.error, exc_type=record.exc_type, traceback=record.traceback,
        retries=record.retries, date_done=record.date_done,
    )  # fmt: skip


def hook_task_id(webhook_id: str) -> str:
    """The task id of a hook delivery: its ``webhook-id`` when that is a valid task id,
    else a digest of it (either way the same for every redelivery)."""
    if names.is_valid_task_id(webhook_id):
        return webhook_id
    return "hook-" + hashlib.sha256(webhook_id.encode()).hexdigest()[:40]


class Gateway:
    """What the routes share: the access document, the SDK app and the metrics."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.access: Access = settings.access
        self.metrics = metrics
        self.celeriac = Celeriac(
            "celeriac-gateway",
            nats_url=settings.nats_url,
            declare_queues=False,
            set_as_current=False,
        )

    async def broker(self) -> Broker:
        """The process's broker; 503 when NATS cannot be reached."""
        try:
            return await self.celeriac.broker()
        except CeleriacError as exc:
            raise unavailable(str(exc)) from None

    def caller(self, credentials: HTTPAuthorizationCredentials | None) -> Grant:
        """The grant of the request's bearer token; 401 without a configured one."""
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise unauthorized("send a token: Authorization: Bearer <token>")
        grant = self.access.grant(credentials.credentials)
        if grant is None:
            raise unauthorized("the token is not one of the gateway's tokens")
        return grant

    async def submit(
        self, request: models.TaskRequest, grant: Grant | None, task_id: str | None
    ) -> models.Accepted:
        """Enqueue one task through the SDK; a ``Problem`` for anything refused."""
        queue = request.queue or self.celeriac.default_queue
        if not names.is_valid_queue_name(queue):
            raise invalid([FieldError("queue", f"{queue!r} is not a queue name")])
        if grant is not None and not grant.allows(queue):
            raise forbidden(queue)
        options = {"queue": queue, "task_id": task_id, "countdown": request.countdown,
                   "eta": request.eta, "expires": request.expires,
                   "webhook": request.webhook}  # fmt: skip
        started, outcome = time.perf_counter(), "refused"
        try:
            result = await self.celeriac.asend_task(
                request.task, request.args, request.kwargs, **options
            )
            outcome = "accepted"
        except QueueNotFoundError:
            raise unknown_queue(queue) from None
        except ScheduleNotSupportedError as exc:
            field = "countdown" if request.countdown is not None else "eta"
            raise invalid([FieldError(field, str(exc))]) from None
        except CeleriacError as exc:  # cannot connect, or no acknowledgement
            outcome = "unavailable"
            raise unavailable(str(exc)) from None
        except (TypeError, ValueError) as exc:
            args, kwargs = request.args, request.kwargs
            raise invalid(culprits(request.task, args, kwargs, options, exc)) from None
        finally:
            self.metrics.submitted(time.perf_counter() - started, outcome)
        return models.Accepted(id=result.id, queue=queue, location=f"/v1/tasks/{result.id}")

    async def record(self, task_id: str, wait: float) -> ResultRecord | None:
        """The stored record of ``task_id``, waiting up to ``wait`` s for a final state."""
        results = (await self.broker()).results
        try:
            record = await results.get(task_id)
            if wait > 0 and (record is None or not record.state.ready):
                try:
                    record = await results.wait(task_id, wait)
                except ResultTimeoutError:
                    record = await results.get(task_id)
        except QueueNotFoundError:
            return None  # no results bucket yet: nothing has finished anywhere
        except (NatsError, TimeoutError) as exc:
            raise unavailable(f"cannot read the result of {task_id} from NATS: {exc!r}") from None
        return record


def _task_id(value: str) -> str:
    if not names.is_valid_task_id(value):
        raise invalid([FieldError("id", f"invalid task id {value!r}")])
    return value


def _submit_id(body_id: str | None, key: str | None) -> str | None:
    """The task id of a submit: the Idempotency-Key header, else the body's ``id``."""
    if key is not None and not names.is_valid_task_id(key):
        detail = "use 1-200 letters, digits, '-', '_', '=' or '.' (it becomes the task id)"
        raise invalid([FieldError("Idempotency-Key", detail)])
    if key is not None and body_id is not None and key != body_id:
        raise invalid([FieldError("id", "differs from the Idempotency-Key header")])
    return key or body_id


def _item_problem(index: int, problem: Problem) -> models.ItemProblem:
    """A refused batch item, its fields named within the batch (``tasks[2].eta``)."""
    errors = [
        {"field": e.field if e.field == "Idempotency-Key" else f"tasks[{index}].{e.field}",
         "detail": e.detail}
        for e in problem.errors
    ]  # fmt: skip
    return models.ItemProblem(
        status=problem.status, title=problem.title, detail=problem.detail, errors=errors
    )


def build(settings: Settings, metrics: Metrics | None = None) -> FastAPI:  # noqa: C901, PLR0915
    """The gateway's ASGI app for ``settings``."""
    gateway = Gateway(settings, metrics or Metrics())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gateway.celeriac.aclose()

    api = FastAPI(
        title="Celeriac gateway", version=__version__, lifespan=lifespan, docs_url="/docs",
        redoc_url=None,
        description="Submit tasks, read their results, revoke them and take signed webhooks "
        "over HTTP. Errors are RFC 9457 problem details.",
    )  # fmt: skip

    # async: FastAPI would run a plain function on a worker thread, on every request.
    async def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Grant:
        return gateway.caller(credentials)

    Caller = Annotated[Grant, Depends(caller)]  # noqa: N806 - a type alias

    @api.exception_handler(Problem)
    async def on_problem(_: Request, exc: Problem) -> JSONResponse:
        return _problem_response(exc)

    @api.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem_response(from_validation(exc.errors()))

    @api.exception_handler(Exception)
    async def on_crash(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not the caller's mistake: logged with its traceback, answered as a problem.
        log.error("request failed", exc_info=exc)
        detail = "the gateway failed to handle this request; its log has the details"
        return _problem_response(Problem(500, "internal-error", "Internal error", detail))

    @api.exception_handler(HTTPException)
    async def on_http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not decode the body
            return _problem_response(malformed("the request body is not UTF-8 JSON"))
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        problem = Problem(exc.status_code, title.lower().replace(" ", "-"), title,
                          str(exc.detail), headers=dict(exc.headers or {}))  # fmt: skip
        return _problem_response(problem)

    @api.post(
        "/v1/tasks", status_code=202, response_model=models.Accepted, responses=_REFUSALS,
        summary="Enqueue a task",
    )  # fmt: skip
    async def submit(
        body: models.TaskRequest,
        grant: Caller,
        response: Response,
        idempotency_key: Annotated[
            str | None,
            Header(description="becomes the task id: a retried request enqueues once"),
        ] = None,
    ) -> models.Accepted:
        accepted = await gateway.submit(body, grant, _submit_id(body.id, idempotency_key))
        response.headers["Location"] = accepted.location
        return accepted

    async def batch(
        body: models.BatchRequest,
        grant: Caller,
        response: Response,
        idempotency_key: Annotated[
            str | None, Header(description="item i gets the task id '<key>.<i>'")
        ] = None,
    ) -> models.BatchResponse:
        results: list[models.Accepted | models.ItemProblem] = []
        for index, raw in enumerate(body.tasks):
            try:
                try:
                    item = models.TaskRequest.model_validate(raw)
                except ValidationError as exc:
                    raise from_validation(exc.errors()) from None
                key = f"{idempotency_key}.{index}" if idempotency_key else None
                results.append(await gateway.submit(item, grant, _submit_id(item.id, key)))
            except Problem as problem:
                results.append(_item_problem(index, problem))
        if any(isinstance(r, models.ItemProblem) for r in results):
            response.status_code = 207
        return models.BatchResponse(results=results)

    for path in ("/v1/tasks:batch", "/v1/tasks/batch"):
        api.post(
            path, status_code=202, response_model=models.BatchResponse, responses=_REFUSALS,
            summary="Enqueue several tasks; one result per item (207 when any was refused)",
            include_in_schema=path.endswith(":batch"),
        )(batch)  # fmt: skip

    @api.get(
        "/v1/tasks/{task_id}", response_model=models.TaskStatus, responses=_REFUSALS,
        summary="A task's state and result, optionally waiting for it to finish",
    )  # fmt: skip
    async def read(
        task_id: Annotated[str, Path(description="the task id")],
        _: Caller,
        wait: Annotated[
            float, Query(ge=0, le=MAX_WAIT, description="seconds to wait for a final state")
        ] = 0,
    ) -> models.TaskStatus:
        task_id = _task_id(task_id)
        return _status(task_id, await gateway.record(task_id, wait))

    @api.delete(
        "/v1/tasks/{task_id}", status_code=202, response_model=models.TaskStatus,
        responses=_REFUSALS, summary="Revoke a task: no worker runs it from now on",
    )  # fmt: skip
    async def revoke(
        task_id: Annotated[str, Path(description="the task id")], _: Caller
    ) -> models.TaskStatus:
        task_id = _task_id(task_id)
        await gateway.broker()
        try:
            await gateway.celeriac.AsyncResult(task_id).arevoke("revoked through the gateway")
        except QueueNotFoundError as exc:
            raise unavailable(f"cannot revoke {task_id}: {exc}") from None
        except (NatsError, TimeoutError) as exc:
            raise unavailable(f"cannot revoke {task_id} on NATS: {exc!r}") from None
        return _status(task_id, await gateway.record(task_id, 0))

    @api.get("/v1/queues", response_model=models.Queues, responses=_REFUSALS,
             summary="The queues this token may use, now")  # fmt: skip
    async def queues(grant: Caller) -> models.Queues:
        js = (await gateway.broker()).js
        found = []
        try:
            for queue in await work_queues(js):
                if not grant.allows(queue):
                    continue
                try:
                    status = await queue_status(js, queue)
                except UnknownQueueError:
                    continue  # a stream without its consumer: not a usable queue
                found.append(models.QueueInfo(**{k: v for k, v in status.as_json().items()
                                                 if k != "rate"}))  # fmt: skip
        except (NatsError, TimeoutError) as exc:
            raise unavailable(f"cannot list the queues on NATS: {exc!r}") from None
        return models.Queues(queues=found)

    @api.post(
        "/v1/hooks/{name}", status_code=202, response_model=models.Accepted,
        responses=_REFUSALS, summary="Take a signed webhook (Standard Webhooks) as a task",
    )  # fmt: skip
    async def hook(
        name: Annotated[str, Path(description="the hook's name")],
        request: Request,
        response: Response,
    ) -> models.Accepted:
        configured = gateway.access.hooks.get(name)
        if configured is None:
            raise not_found(f"no hook named {name!r}")
        body = await request.body()
        try:
            Webhook(configured.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            raise unauthorized(f"the signature of hook {name!r} does not verify: {exc}") from None
        accepted = await gateway.submit(
            _hook_request(configured, body, request.headers), None,
            hook_task_id(request.headers["webhook-id"]),
        )  # fmt: skip
        response.headers["Location"] = accepted.location
        return accepted

    @api.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", summary="Readiness: connected to NATS",
             responses={503: {"description": "NATS unavailable", **_PROBLEM}})  # fmt: skip
    async def readyz() -> dict[str, str]:
        broker = await gateway.broker()
        if not broker.connection.connected:
            raise unavailable(f"NATS at {broker.connection.url} is down; reconnecting")
        return {"status": "ready"}

    @api.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_route() -> Response:
        return Response(gateway.metrics.exposition(), media_type="text/plain; version=0.0.4")

    # The last added runs first: every answer is counted, also a 413 for an oversized body.
    api.add_middleware(BodyLimit, limit=settings.max_body)
    api.add_middleware(CountRequests, metrics=gateway.metrics)
    api.state.gateway = gateway
    return api


def _hook_request(hook: Hook, body: bytes, headers: Mapping[str, str]) -> models.TaskRequest:
    """The task a verified hook delivery becomes: kwargs ``payload`` and ``headers``."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise malformed(f"the hook's body is not JSON: {exc}") from None
    selected = {name: headers[name] for name in hook.headers if name in headers}
    return models.TaskRequest(
        task=hook.task, queue=hook.queue, kwargs={"payload": payload, "headers": selected}
    )
