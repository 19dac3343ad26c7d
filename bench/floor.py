"""The floor for `bench.gateway`: a bare FastAPI route served exactly as `wasmhost serve` serves the gateway
(same worker processes, event loop, HTTP parser and server settings). ``python -m bench.floor --port P
--workers N``."""

from __future__ import annotations

import argparse

from fastapi import FastAPI, Request

from wasmhost.gateway.config import GatewayConfig
from wasmhost.gateway.server import run


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/floor")
    async def floor(request: Request) -> dict[str, bool]:
        await request.body()
        return {"ok": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    run(lambda _group: bare_app(), "127.0.0.1", args.port, args.workers, GatewayConfig())


if __name__ == "__main__":
    main()
