"""Who is calling: the operator, a namespace admin (API key) or an app user (the tenant's JWT).

The namespace is always derived from the credential: from the API key's row, or from the namespace
whose settings verified the user token. A URL or body field never chooses it.

Failed authentications are throttled per client address (`AuthFailureThrottle`): past the budget, a
failure is answered 429 + Retry-After instead of 401. The credential is always checked first (a hash
lookup, a constant-time compare or a signature check), and a valid one always passes: clients behind
one NAT or one reverse proxy share an address, and an attacker among them must not be able to lock
the others out. Brute force gains nothing from that order, since every credential is unguessable
(API keys carry 256 random bits, the operator token has at least 32 characters, user tokens are signed);
the throttle bounds what a scan costs and tells well-behaved clients to back off.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError
from .state import Gateway, get_gateway
from .usertokens import InvalidUserToken, verify_user_token

__all__ = [
    "API_KEY_PREFIX",
    "NAMESPACE_HEADER",
    "Admin",
    "AdminDep",
    "OperatorDep",
    "User",
    "UserDep",
    "hash_api_key",
    "new_api_key",
]

API_KEY_PREFIX = "whk_"
NAMESPACE_HEADER = "X-Wasmhost-Namespace"
#: Longest bearer credential we look at; anything longer is refused unread.
MAX_CREDENTIAL_CHARS = 8 * 1024

_operator_scheme = HTTPBearer(
    scheme_name="operatorToken", description="The operator token (WASMHOST_ADMIN_TOKEN)", auto_error=False
)
_admin_scheme = HTTPBearer(
    scheme_name="namespaceApiKey", description="A namespace API key (`whk_…`), shown once at creation",
    auto_error=False,
)
_user_scheme = HTTPBearer(
    scheme_name="userToken", bearerFormat="JWT",
    description=f"A JWT issued by the tenant's backend (`sub` = user id); the namespace is named by {NAMESPACE_HEADER}",
    auto_error=False,
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def new_api_key() -> tuple[str, str, str]:
    """A fresh ``(key_id, api_key, hash)``; only the hash is stored, the key is shown once."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return "key_" + secrets.token_hex(8), key, hash_api_key(key)


def hash_api_key(key: str) -> str:
    """SHA-256 is enough: keys carry 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(key.encode()).hexdigest()


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, _CHALLENGE)


def _bearer(credentials: HTTPAuthorizationCredentials | None, what: str) -> str:
    if credentials is None or not credentials.credentials:
        raise _unauthorized(f"missing credentials: send Authorization: Bearer <{what}>")
    token = credentials.credentials.strip()
    if len(token) > MAX_CREDENTIAL_CHARS:
        raise _unauthorized("credential is too long")
    return token


def _failed(gw: Gateway, request: Request, error: ApiError) -> ApiError:
    """What to answer for a failed authentication: `error` (401), or 429 once the caller's address is
    over its budget of failures."""
    address = request.client.host if request.client else ""
    throttled = gw.auth_throttle.refuse(address)
    if throttled is None:
        return error
    gw.metrics.rate_limited.labels(cap="auth_failures").inc()
    return throttled


def check_operator(gw: Gateway, credentials: HTTPAuthorizationCredentials | None) -> None:
    expected = gw.config.admin_token
    if not expected:
        raise ApiError(503, "operator routes are disabled: set WASMHOST_ADMIN_TOKEN on the gateway")
    token = _bearer(credentials, "operator token")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise _unauthorized("invalid operator token")


async def require_operator(
    gw: Annotated[Gateway, Depends(get_gateway)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_operator_scheme)],
    request: Request,
) -> None:
    try:
        check_operator(gw, credentials)
    except ApiError as exc:
        raise (_failed(gw, request, exc) if exc.status_code == 401 else exc) from None


@dataclass(frozen=True)
class Admin:
    namespace: str
    key_id: str


async def require_admin(
    gw: Annotated[Gateway, Depends(get_gateway)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_scheme)],
    request: Request,
) -> Admin:
    try:
        token = _bearer(credentials, "namespace API key")
        if not token.startswith(API_KEY_PREFIX):
            raise _unauthorized("this route needs a namespace API key (whk_…)")
        found = await gw.cached.api_key(hash_api_key(token))
        if found is None:
            raise _unauthorized("invalid or revoked API key")
    except ApiError as exc:
        raise (_failed(gw, request, exc) if exc.status_code == 401 else exc) from None
    return Admin(found.namespace, found.id)


@dataclass(frozen=True)
class User:
    namespace: str
    user_id: str


async def require_user(
    gw: Annotated[Gateway, Depends(get_gateway)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_user_scheme)],
    request: Request,
    namespace: Annotated[
        str | None, Header(alias=NAMESPACE_HEADER, min_length=1, max_length=63, description="The app's namespace")
    ] = None,
) -> User:
    try:
        # The credential is checked before the header, so an API key here learns what this route wants.
        token = _bearer(credentials, "user JWT")
        if token.startswith(API_KEY_PREFIX):
            raise _unauthorized(
                f"this route needs an app user's JWT (Authorization: Bearer <JWT> with {NAMESPACE_HEADER}), not an "
                "API key: the tenant's backend issues user tokens, verified with the settings of PUT /v1/namespace/auth"
            )
        if namespace is None:
            raise ApiError(400, f"missing the {NAMESPACE_HEADER} header: name the app's namespace")
        settings = await gw.cached.auth_settings(namespace)
        if not settings:
            # Same answer for unknown namespaces: whether a namespace exists is not for anonymous callers.
            raise _unauthorized("this namespace does not accept user tokens (no auth settings)")
        try:
            user_id = verify_user_token(token, settings)
        except InvalidUserToken as exc:
            raise _unauthorized(f"invalid user token: {exc}") from None
    except ApiError as exc:
        raise (_failed(gw, request, exc) if exc.status_code == 401 else exc) from None
    return User(namespace, user_id)


OperatorDep = Annotated[None, Depends(require_operator)]
AdminDep = Annotated[Admin, Depends(require_admin)]
UserDep = Annotated[User, Depends(require_user)]
