"""The self-serve HTTP gateway: `create_app` (ASGI) and `serve` (uvicorn). See docs/gateway.md."""

from .app import create_app, gateway_lifespan
from .config import GatewayConfig
from .server import serve

__all__ = ["GatewayConfig", "create_app", "gateway_lifespan", "serve"]
