"""Request and response bodies, as the OpenAPI document shows them.

Requests are strict (no type coercion) and closed (unknown fields are a 400), so a typo is an error
instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..push.message import MAX_MESSAGE_ID_BYTES, MAX_TTL_SECONDS

NAMESPACE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
FUNCTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: Longest tenant-supplied URL and secret in the flat config.
MAX_URL_CHARS = 2048
MAX_SECRET_CHARS = 4096


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- operator -------------------------------------------------------------------------------------


class CreateNamespace(Input):
    name: Annotated[str, Field(pattern=NAMESPACE_PATTERN, description="lowercase letters, digits and '-'")]


class KeyCreated(BaseModel):
    namespace: str
    key_id: str
    api_key: str = Field(description="Shown once; only its hash is stored")


class KeyInfo(BaseModel):
    key_id: str
    created_at: float


class KeyList(BaseModel):
    namespace: str
    keys: list[KeyInfo]


class NamespaceList(BaseModel):
    namespaces: list[str]


class Status(BaseModel):
    status: str


# -- namespace admin ------------------------------------------------------------------------------


class NamespaceInfo(BaseModel):
    namespace: str
    key_id: str
    push_configured: bool = Field(description="Whether a send would find a provider (defaults, config or credentials)")
    providers: list[str] = Field(description="Providers with saved credentials")


class AuthSettingsIn(Input):
    alg: Literal["HS256", "ES256", "RS256"]
    key: Annotated[str, Field(min_length=1, max_length=16384, description="HS256 secret, or the PEM public key")]
    issuer: Annotated[str | None, Field(max_length=512)] = None
    audience: Annotated[str | None, Field(max_length=512)] = None


class AuthSettingsView(BaseModel):
    namespace: str
    configured: bool
    alg: str | None = None
    issuer: str | None = None
    audience: str | None = None
    public_key: str | None = Field(default=None, description="The PEM public key (never an HS256 secret)")


class AuthSettingsSaved(AuthSettingsView):
    warning: str | None = Field(
        default=None,
        description="Set when no audience is set: namespaces trusting the same key accept each other's tokens",
    )


class CredentialsList(BaseModel):
    namespace: str
    configured: list[str]
    supported: list[str]
    push_configured: bool


class CredentialsView(BaseModel):
    namespace: str
    provider: str
    configured: bool
    redacted: dict[str, Any] | None = Field(default=None, description="Secrets appear only as has_<field>: true")


class PushConfigIn(Input):
    """Omitted or null keeps a field; "" clears it."""

    ntfy_base_url: Annotated[str | None, Field(max_length=MAX_URL_CHARS)] = None
    ntfy_auth_token: Annotated[str | None, Field(max_length=MAX_SECRET_CHARS)] = None
    expo_access_token: Annotated[str | None, Field(max_length=MAX_SECRET_CHARS)] = None


class PushConfigView(BaseModel):
    namespace: str
    ntfy_base_url: str
    has_ntfy_auth_token: bool
    has_expo_access_token: bool
    updated_at: float


# -- devices --------------------------------------------------------------------------------------


class DeviceIn(Input):
    device_id: Annotated[str, Field(min_length=1, max_length=128)]
    provider: Annotated[str, Field(min_length=1, max_length=32)]
    token: Annotated[str, Field(min_length=1, max_length=4096, description="Validated by the provider; never returned")]
    platform: Annotated[str, Field(max_length=32)] = ""
    app_version: Annotated[str, Field(max_length=64)] = ""


class DeviceView(BaseModel):
    id: str
    device_id: str
    user_id: str
    provider: str
    platform: str
    app_version: str
    created_at: float
    updated_at: float


class DeviceList(BaseModel):
    devices: list[DeviceView]


# -- sends ----------------------------------------------------------------------------------------


class SendIn(Input):
    user_id: Annotated[str, Field(min_length=1, max_length=512)]
    title: str | None = None
    body: str | None = None
    data: dict[str, Any] | None = None
    badge: Annotated[int | None, Field(ge=0, le=1_000_000)] = None
    sound: str | None = None
    channel: str | None = None
    priority: Literal["high", "normal"] | None = None
    ttl_seconds: Annotated[int | None, Field(ge=0, le=MAX_TTL_SECONDS)] = None
    message_id: Annotated[str | None, Field(max_length=MAX_MESSAGE_ID_BYTES)] = None
    content_available: bool | None = None
    target_provider: str | None = None
    exclude_provider: str | None = None


class DeviceResultView(BaseModel):
    device_id: str
    provider: str
    success: bool
    status: int
    reason: str
    message: str
    unregistered: bool
    attempts: int
    state: str = Field(description="queued, sending, sent (Expo: awaiting its receipt), delivered, failed, dead"
                                   " or expired")


class SendReportView(BaseModel):
    send_id: str | None = Field(None, description="The accepted send (GET /v1/push/sends/{send_id})")
    ok: bool = Field(description="Every attempted device succeeded (true with no devices)")
    devices_attempted: int
    devices_succeeded: int
    results: list[DeviceResultView]


class SendAccepted(BaseModel):
    send_id: str
    state: str = Field(description="pending while any delivery may still be attempted, then completed")


class DeliveryStatusView(BaseModel):
    id: str
    device_id: str
    provider: str
    state: str = Field(description="queued, sending, sent (Expo: awaiting its receipt), delivered, failed, dead"
                                   " or expired")
    attempts: int
    next_attempt_at: float | None
    status: int
    reason: str
    error: str
    updated_at: float


class SendStatusView(BaseModel):
    send_id: str
    user_id: str
    state: str = Field(description="pending while any delivery may still be attempted, then completed")
    created_at: float
    expires_at: float
    counts: dict[str, int]
    deliveries: list[DeliveryStatusView]


class SendList(BaseModel):
    sends: list[SendStatusView]
    next_cursor: str | None


class OutboxEntry(BaseModel):
    id: int
    user: str
    device_id: str
    message: dict[str, Any]
    time: float


class OutboxList(BaseModel):
    deliveries: list[OutboxEntry]


# -- functions ------------------------------------------------------------------------------------


class LimitsView(BaseModel):
    fuel: int
    timeout_ms: int
    memory_mb: int
    max_output_bytes: int
    max_log_lines: int
    max_log_line_bytes: int
    max_sends: int


class FunctionView(BaseModel):
    name: str
    sha256: str
    size: int
    limits: LimitsView = Field(description="Effective limits (defaults where the deploy set none)")
    created_at: float
    updated_at: float


class FunctionList(BaseModel):
    functions: list[FunctionView]


class InvocationErrorView(BaseModel):
    kind: str = Field(description="out_of_fuel, timeout, memory, trap, invalid_module or link")
    message: str


class LogView(BaseModel):
    level: str
    message: str


class SendErrorView(BaseModel):
    code: int
    kind: str
    message: str


class GuestSendView(SendReportView):
    ticket: int
    user_id: str
    error: SendErrorView | None


class InvocationView(BaseModel):
    ok: bool = Field(description="handle returned 0 and the sandbox did not stop the guest")
    code: int | None = Field(description="handle's return value (null when the guest was stopped)")
    error: InvocationErrorView | None
    output: str = Field(description="The output as UTF-8 text (invalid bytes replaced)")
    output_base64: str | None = Field(description="The exact output, base64, when it is not valid UTF-8")
    logs: list[LogView]
    sends: list[GuestSendView]
    fuel_used: int
    duration_ms: float


class Health(BaseModel):
    status: str


# -- webhooks -------------------------------------------------------------------------------------


class WebhookIn(Input):
    url: Annotated[str, Field(min_length=1, max_length=MAX_URL_CHARS,
                              description="https URL the events are POSTed to (checked by the SSRF guard)")]
    events: Annotated[list[str], Field(min_length=1, max_length=8, description=(
        "Non-empty subset of delivery.failed, delivery.dead_token, send.completed"))]
    rotate_secret: bool = Field(False, description="Generate a new signing secret (the first PUT always does)")


class WebhookView(BaseModel):
    namespace: str
    url: str
    events: list[str]
    state: Literal["enabled", "disabled"]
    disabled_at: float | None = Field(description="When the endpoint was disabled for failing too long")
    disabled_reason: str | None
    created_at: float
    updated_at: float
    last_success_at: float | None
    last_failure_at: float | None
    failing_since: float | None = Field(description="First failure since the last success")
    failures: int = Field(description="Failed attempts since the last success")
    last_error: str | None


class WebhookSaved(WebhookView):
    secret: str | None = Field(None, description=(
        "The signing secret (whsec_…): present only when it was generated by this PUT, shown only this once"))
