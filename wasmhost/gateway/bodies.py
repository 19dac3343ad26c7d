"""Request body caps, enforced while the body streams in (so an oversized body is never buffered).

JSON routes declare their cap with `capped(n)` in the route's ``openapi_extra`` (it also documents the
cap as ``x-max-body-bytes``); `LimitedRoute` wraps the ASGI ``receive`` of those routes. Raw-body
routes (modules, invocation input) read with `read_capped` after authentication.

`LimitedRoute` also refuses JSON strings holding a lone UTF-16 surrogate (``"\ud800"``): JSON allows
the escape, but the text cannot be encoded as UTF-8, so it would fail wherever it is stored or sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Message, Receive

from ..push.message import SURROGATE_ESCAPE, has_lone_surrogate
from .errors import ApiError

__all__ = ["CAP_KEY", "LimitedRoute", "capped", "read_capped"]

CAP_KEY = "x-max-body-bytes"

KIB = 1024


def capped(limit: int, **extra: Any) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body may be at most `limit` bytes."""
    return {CAP_KEY: limit, **extra}


def too_large(limit: int, what: str = "") -> ApiError:
    """`what` names the limit for the caller (e.g. the module limit and its setting)."""
    return ApiError(413, f"request body is over this route's limit of {limit} bytes" + (f" ({what})" if what else ""))


def _check_declared(request: Request, limit: int, what: str = "") -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise ApiError(400, "Content-Length is not a number") from None
    if size > limit:
        raise too_large(limit, what)


def _limited_receive(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit)
        return message

    return wrapped


class _StrictJSONRequest(Request):
    """A request whose JSON body must be text UTF-8 can carry."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            doc = json.loads(body)
            if SURROGATE_ESCAPE.search(body) and has_lone_surrogate(doc):
                raise ApiError(400, "body is not valid JSON text: a string holds a lone UTF-16 surrogate")
            self._json = doc
        return self._json


class LimitedRoute(APIRoute):
    """An APIRoute that refuses bodies over its declared cap with 413 before the handler parses them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit = (self.openapi_extra or {}).get(CAP_KEY)
        if not isinstance(limit, int):

            async def strict(request: Request) -> Response:
                return await handler(_StrictJSONRequest(request.scope, request.receive))

            return strict

        async def limited(request: Request) -> Response:
            _check_declared(request, limit)
            return await handler(_StrictJSONRequest(request.scope, _limited_receive(request.receive, limit)))

        return limited


async def read_capped(request: Request, limit: int, what: str = "") -> bytes:
    """The whole body, or 413 (naming `what`) as soon as it passes `limit` bytes."""
    _check_declared(request, limit, what)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit, what)
    return bytes(body)
