"""One error shape for every failure: ``{"error": "<text>"}`` with the right status.

Handlers cover Starlette's own 404/405, request validation (reported as 400, naming the field), store
and push failures, and anything unexpected (500, logged, never echoed). Texts shown to callers are
written here or come from exceptions whose texts are documented as safe (no secrets, no tokens).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ..push.errors import PushNotConfigured, PushUnavailable
from ..store.base import NotFound, StoreError, TooManyDevices

__all__ = ["ApiError", "ErrorBody", "install_error_handlers", "responses"]

LOG = logging.getLogger("wasmhost.gateway")

#: Validation problems listed in one 400 text, at most.
MAX_LISTED_PROBLEMS = 5

_DESCRIPTIONS = {
    400: "Bad input: malformed JSON, a wrong or missing field, an unknown provider, an invalid module",
    401: "Missing or invalid credentials (operator token, namespace API key or user JWT)",
    404: "Not found (another namespace's object is also not found)",
    405: "Method not allowed",
    409: "Conflict: the object already exists, or the user has as many devices as allowed",
    413: "Request body over this route's size cap",
    429: "A cap reached (per namespace, or failed authentications per address); retry after `Retry-After` seconds",
    503: "Not available: push not configured for the namespace, store down, or operator routes disabled",
    500: "Gateway fault (details are in the server log, never in the response)",
}


class ErrorBody(BaseModel):
    error: str


class ApiError(HTTPException):
    """Raise to answer ``{"error": message}`` with `status` (and optional headers, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=dict(headers) if headers else None)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can answer (500 is always listed)."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in (*codes, 500)}


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers) if headers else None)


def _describe_validation(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors()[:MAX_LISTED_PROBLEMS]:
        loc = ".".join(str(part) for part in err.get("loc", ()) if part not in ("body", "query", "path", "header"))
        msg = str(err.get("msg", "invalid"))
        ctx = err.get("ctx") or {}
        if err.get("type") == "json_invalid" and "error" in ctx:
            msg = f"body is not valid JSON: {ctx['error']}"
        problems.append(f"{loc}: {msg}" if loc else msg)
    more = len(exc.errors()) - MAX_LISTED_PROBLEMS
    text = "; ".join(problems) or "invalid request"
    return text + (f" (and {more} more)" if more > 0 else "")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's 405 lists only the first route's)."""
    methods: set[str] = set()
    path, root = request.url.path, request.scope.get("root_path", "")
    if root and path.startswith(root + "/"):  # mounted under a prefix: routes match the rest
        path = path[len(root):]
    for route in getattr(request.app.state, "api_routes", ()):
        if route.path_regex.match(path):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def _body_problem(exc: HTTPException) -> str:
    """FastAPI answers "There was an error parsing the body" when decoding the JSON body raised
    something other than a syntax error; name what it was (never the exception's own text)."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return "body is not valid UTF-8"
    if isinstance(cause, RecursionError):
        return "body is not valid JSON: nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "body is not valid JSON: a number has too many digits"
    return "body could not be parsed"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    detail = str(exc.detail)
    if exc.status_code == 400 and exc.__cause__ is not None and not isinstance(exc, ApiError):
        detail = _body_problem(exc)
    return error_response(exc.status_code, detail, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    body_unread = any(tuple(e.get("loc", ())) == ("body",) for e in exc.errors())
    if body_unread and "json" not in request.headers.get("content-type", "json"):
        return error_response(400, "the body must be JSON: send Content-Type: application/json")
    return error_response(400, _describe_validation(exc))


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc) or "not found")


async def _too_many_devices(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, str(exc))


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    LOG.error("gateway: store failure on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return error_response(503, "the store is unavailable; try again later", {"Retry-After": "5"})


async def _push_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, str(exc))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    LOG.error("gateway: unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return error_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(TooManyDevices, _too_many_devices)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(PushNotConfigured, _push_error)
    app.add_exception_handler(PushUnavailable, _push_error)
    app.add_exception_handler(Exception, _internal_error)
