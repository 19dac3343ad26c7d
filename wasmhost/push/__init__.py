"""Push: the manager, dispatcher, message and report types, and the provider protocol."""

from .accepted import Accepted
from .credentials import CredentialsError, ProviderSpec, document_digest
from .delivery import DeliveryQueue, QueueSettings
from .dispatcher import Dispatcher, RetryPolicy
from .errors import PushError, PushNotConfigured, PushUnavailable, QueueFull, SendConflict
from .manager import Defaults, Manager
from .message import MAX_MESSAGE_BYTES, MessageError, MessageTooBig, PushMessage, parse_message
from .observer import PushObserver
from .provider import BaseProvider, Delivery, FailureKind, Outcome, Provider, ProviderFactory, ResolvedConfig
from .redact import redact
from .report import DeviceResult, SendReport

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Accepted",
    "BaseProvider",
    "CredentialsError",
    "Defaults",
    "DeliveryQueue",
    "Delivery",
    "DeviceResult",
    "Dispatcher",
    "FailureKind",
    "Manager",
    "MessageError",
    "MessageTooBig",
    "Outcome",
    "Provider",
    "ProviderFactory",
    "ProviderSpec",
    "PushError",
    "PushMessage",
    "PushNotConfigured",
    "PushObserver",
    "PushUnavailable",
    "QueueFull",
    "QueueSettings",
    "ResolvedConfig",
    "RetryPolicy",
    "SendConflict",
    "SendReport",
    "document_digest",
    "parse_message",
    "redact",
]
