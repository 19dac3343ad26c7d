"""The tenant console: static pages served at ``/console`` that use only the public HTTP API.

Every asset ships in this package (no CDN, no Node at run time). Pages are answered with a strict
Content-Security-Policy: scripts and styles only from files served here, no inline code, no framing,
and requests only to this origin. The scripts render everything a tenant or guest controls as text.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

__all__ = ["CSP", "router"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_STATIC = resources.files(__name__).joinpath("static")
#: The assets, read once: name -> (bytes, content type). Only these names are ever served.
_ASSETS: dict[str, tuple[bytes, str]] = {
    entry.name: (entry.read_bytes(), _TYPES[ext])
    for entry in _STATIC.iterdir()
    if entry.is_file() and (ext := "." + entry.name.rpartition(".")[2]) in _TYPES
}

router = APIRouter(include_in_schema=False)


def _asset(name: str) -> Response:
    found = _ASSETS.get(name)
    if found is None:
        raise HTTPException(404)
    body, media_type = found
    return Response(body, media_type=media_type, headers=_HEADERS)


@router.get("/console")
async def console_page() -> Response:
    return _asset("index.html")


@router.get("/console/{name}")
async def console_asset(name: str) -> Response:
    return _asset(name)
