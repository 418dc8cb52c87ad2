"""Composition root: the Azure Functions triggers, each a thin wrapper around one `core` call.

`core`'s run machinery (pyarrow, DuckDB, the Azure SDKs) is imported on a trigger's first call,
not at indexing: the host imports this module to list the functions, and that stays cheap.
"""

from __future__ import annotations

import logging

import azure.functions as func

from core.settings import RUNS_QUEUE, Settings

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("filecast")


@app.timer_trigger(arg_name="timer", schedule="%SCHEDULER_CRON%", run_on_startup=False, use_monitor=True)
def scheduler(timer: func.TimerRequest) -> None:
    """Fan out: one queue message per activation due since its last enqueue."""
    from core.control import service

    sent = service.schedule_tick(Settings.load(), service.utcnow())
    log.info("scheduler enqueued %d run(s): %s", len(sent), ", ".join(sent))


@app.queue_trigger(arg_name="message", queue_name=RUNS_QUEUE, connection="AzureWebJobsStorage")
def runner(message: func.QueueMessage) -> None:
    """Run one activation; a transient failure raises so the host retries (then the poison queue)."""
    import asyncio

    from core.control import service

    result = asyncio.run(
        service.handle_run_message(
            Settings.load(), message.get_body().decode("utf-8"), dequeue_count=message.dequeue_count
        )
    )
    if result is not None and result.transient and result.exception is not None:
        raise result.exception


@app.queue_trigger(arg_name="message", queue_name=RUNS_QUEUE + "-poison", connection="AzureWebJobsStorage")
def poisoned(message: func.QueueMessage) -> None:
    """A run message the host gave up on: its run is recorded as failed."""
    from core.control import service

    record = service.mark_poisoned(Settings.load(), message.get_body().decode("utf-8"))
    log.error("run %s of %s failed for good: %s", record.run_id, record.activation, record.error)


def _respond(operation: str, req: func.HttpRequest) -> func.HttpResponse:
    from core.control import api

    status, body = api.handle(Settings.load(), operation, dict(req.route_params), req.get_body())
    return func.HttpResponse(api.dumps(body), status_code=status, mimetype="application/json")


@app.route(route="catalog", methods=["PUT"])
def put_catalog(req: func.HttpRequest) -> func.HttpResponse:
    return _respond("put_catalog", req)


@app.route(route="activations", methods=["GET"])
def list_activations(req: func.HttpRequest) -> func.HttpResponse:
    return _respond("list_activations", req)


@app.route(route="activations/{id}", methods=["GET"])
def get_activation(req: func.HttpRequest) -> func.HttpResponse:
    return _respond("get_activation", req)


@app.route(route="activations/{id}/run", methods=["POST"])
def run_activation(req: func.HttpRequest) -> func.HttpResponse:
    return _respond("run_activation", req)


@app.route(route="activations/{id}/preview", methods=["POST"])
def preview_activation(req: func.HttpRequest) -> func.HttpResponse:
    return _respond("preview_activation", req)


@app.route(route="activations/{id}/reset", methods=["POST"])
def reset_activation(req: func.HttpRequest) -> func.HttpResponse:
    return _respond("reset_activation", req)


@app.route(route="activations/{id}/runs", methods=["GET"])
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    return _respond("list_runs", req)


@app.route(route="runs/{run_id}", methods=["GET"])
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    return _respond("get_run", req)


def _console(view: str, req: func.HttpRequest) -> func.HttpResponse:
    from core.control import api

    status, page, headers = api.console(Settings.load(), view, dict(req.route_params), dict(req.params))
    return func.HttpResponse(page, status_code=status, mimetype="text/html", charset="utf-8", headers=headers)


@app.route(route="console", methods=["GET"])
def console(req: func.HttpRequest) -> func.HttpResponse:
    return _console("index", req)


@app.route(route="console/activations/{id}", methods=["GET"])
def console_activation(req: func.HttpRequest) -> func.HttpResponse:
    return _console("activation", req)


@app.route(route="console/runs/{run_id}", methods=["GET"])
def console_run(req: func.HttpRequest) -> func.HttpResponse:
    return _console("run", req)
