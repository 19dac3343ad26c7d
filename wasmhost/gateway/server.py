"""`wasmhost serve`: the gateway on uvicorn, with a graceful shutdown.

On SIGINT/SIGTERM uvicorn stops accepting, lets in-flight requests (invocations included) finish for
up to ``shutdown_grace_seconds``, then runs the lifespan shutdown, which closes the runtime (after the
running guest) and the providers' connections.
"""

from __future__ import annotations

import uvicorn

from ..services import Settings
from .app import create_app
from .config import GatewayConfig

__all__ = ["serve", "uvicorn_config"]


def uvicorn_config(host: str, port: int, db_url: str | None) -> uvicorn.Config:
    config = GatewayConfig.from_env()
    app = create_app(Settings.from_env(db_url), config)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        timeout_graceful_shutdown=config.shutdown_grace_seconds,
        server_header=False,
        proxy_headers=False,
    )


def serve(host: str = "127.0.0.1", port: int = 8080, db_url: str | None = None) -> None:
    """Run until SIGINT/SIGTERM. `db_url` falls back to ``WASMHOST_DB``, then the SQLite default."""
    uvicorn.Server(uvicorn_config(host, port, db_url)).run()
