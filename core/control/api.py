"""The HTTP API (DESIGN.md §3) as plain functions: (route values, body) → (status, JSON body).

`function_app.py` turns `func.HttpRequest` into these calls; nothing here imports azure.functions.
Every error answer is `{"error": {"code", "message"[, "problems"]}}`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..catalog.limits import check_size
from ..catalog.model import Activation
from ..catalog.parse import parse_text
from ..error_codes import ANSWERS, ErrorCode
from ..errors import CatalogInvalid, FilecastError, RunInProgress
from ..settings import Settings
from .service import Services, preview_activation, preview_json, request_run, reset_activation

Response = tuple[int, Any]


def error(exc: FilecastError) -> Response:
    """The answer to an error: its status from the one code table (core/error_codes.py)."""
    body: dict[str, Any] = exc.as_dict()
    if isinstance(exc, CatalogInvalid):
        body["problems"] = [{"path": p.path, "message": p.message} for p in exc.problems]
    return ANSWERS[exc.code].http_status(exc.transient), {"error": body}


def _bad_request(message: str) -> Response:
    return ANSWERS[ErrorCode.BAD_REQUEST].status, {"error": {"code": ErrorCode.BAD_REQUEST.value, "message": message}}


def _describe(activation: Activation) -> dict[str, Any]:
    return {
        "id": activation.id,
        "model": activation.model,
        "segment": activation.segment,
        "destination": activation.destination,
        "folder": activation.folder,
        "file_name": activation.file_name,
        "format": activation.format,
        "run_type": activation.run_type,
        "sync_mode": activation.sync_mode,
        "schedule": activation.schedule,
    }


def handle(
    settings: Settings, operation: str, params: dict[str, str], body: bytes = b"", *, services: Services | None = None
) -> Response:
    """Dispatch one API operation; never raises for a FilecastError. `services`: the stores to use
    (default: Filecast's Table Storage ones)."""
    try:
        return _OPERATIONS[operation](services or Services(settings), params, body)
    except FilecastError as exc:
        return error(exc)


def _put_catalog(services: Services, params: dict[str, str], body: bytes) -> Response:
    check_size(len(body), "request body")  # before decoding: a 45 MB body is refused at once (413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _bad_request("the body must be UTF-8 YAML or JSON")
    doc = parse_text(text, "request body")
    if not isinstance(doc, dict):
        return _bad_request("the body must be a catalog document")
    from ..write.encryption import require_keys

    # the OpenPGP keys checked as `filecast validate` checks them, before anything is stored
    catalog = services.catalogs.apply(doc, check=lambda parsed: require_keys(parsed, services.settings))
    return 200, {"activations": sorted(catalog.activations)}


def _list(services: Services, params: dict[str, str], body: bytes) -> Response:
    catalog = services.catalog()
    return 200, {"activations": [_describe(a) for _, a in sorted(catalog.activations.items())]}


def _get(services: Services, params: dict[str, str], body: bytes) -> Response:
    activation = services.catalog().activation(params["id"])
    history = services.runs.history(activation.id, 1)
    return 200, {**_describe(activation), "last_run": history[0].as_dict() if history else None}


def _run(services: Services, params: dict[str, str], body: bytes) -> Response:
    activation = services.catalog().activation(params["id"])
    record = request_run(services, activation.id, services.clock.now())
    return 202, {"run_id": record.run_id, "status": record.status}


def _runs(services: Services, params: dict[str, str], body: bytes) -> Response:
    activation = services.catalog().activation(params["id"])
    return 200, {"runs": [r.as_dict() for r in services.runs.history(activation.id)]}


def _get_run(services: Services, params: dict[str, str], body: bytes) -> Response:
    return 200, services.runs.get(params["run_id"]).as_dict()


def _preview(services: Services, params: dict[str, str], body: bytes) -> Response:
    result = asyncio.run(
        preview_activation(
            services.settings, services.catalog(), params["id"], state=services.state, clock=services.clock
        )
    )
    if result.exception is not None:
        return error(result.exception)
    return 200, preview_json(result.record)


def _reset(services: Services, params: dict[str, str], body: bytes) -> Response:
    activation = services.catalog().activation(params["id"])
    holder = services.leases.holder(activation.id)
    if holder is not None:
        raise RunInProgress(f"activation `{activation.id}` is running (run `{holder}`); reset it when the run ends")
    reset_activation(services.settings, services.catalog(), activation.id, state=services.state)
    return 200, {"activation": activation.id, "reset": True, "next_run": "full"}


_OPERATIONS = {
    "put_catalog": _put_catalog,
    "list_activations": _list,
    "get_activation": _get,
    "run_activation": _run,
    "preview_activation": _preview,
    "reset_activation": _reset,
    "list_runs": _runs,
    "get_run": _get_run,
}


def console(
    settings: Settings, view: str, params: dict[str, str], query: dict[str, str]
) -> tuple[int, str, dict[str, str]]:
    """A console page (core/control/console/pages.py): (status, HTML, headers); `view` is index, activation or run."""
    from .console.pages import render

    return render(Services(settings), view, params, query)


def dumps(body: Any) -> str:
    return json.dumps(body, indent=2)
