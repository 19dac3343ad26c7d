"""Request body caps, enforced while the body streams in (so an oversized body is never buffered).

JSON routes declare their cap with `capped(n)` in the route's ``openapi_extra`` (it also documents the
cap as ``x-max-body-bytes``); `LimitedRoute` wraps the ASGI ``receive`` of those routes. Raw-body
routes (modules, invocation input) read with `read_capped` after authentication.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Message, Receive

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


class LimitedRoute(APIRoute):
    """An APIRoute that refuses bodies over its declared cap with 413 before the handler parses them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit = (self.openapi_extra or {}).get(CAP_KEY)
        if not isinstance(limit, int):
            return handler

        async def limited(request: Request) -> Response:
            _check_declared(request, limit)
            return await handler(Request(request.scope, _limited_receive(request.receive, limit)))

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
