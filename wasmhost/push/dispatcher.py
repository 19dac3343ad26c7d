"""Fan a message out to one user's devices, concurrently, and account for every device."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ..store.base import Device, DeviceStore, StoreError
from .errors import PushUnavailable
from .message import PushMessage
from .observer import PushObserver
from .provider import Delivery, FailureKind, InStoreProvider, Outcome, Provider
from .redact import redact
from .report import DeviceResult, SendReport

__all__ = ["DEFAULT_SEND_TIMEOUT", "Dispatcher", "RetryPolicy"]

LOG = logging.getLogger("wasmhost.push")

#: Bound on one whole send when the caller gives no deadline.
DEFAULT_SEND_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Jittered exponential backoff for transient failures, always inside the caller's deadline."""

    max_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        return max(backoff, retry_after or 0.0)


class Dispatcher:
    """Routes deliveries to the providers one namespace's config built. Cheap to build; immutable."""

    def __init__(
        self,
        devices: DeviceStore,
        providers: Iterable[Provider] = (),
        *,
        retry: RetryPolicy | None = None,
        observer: PushObserver | None = None,
    ) -> None:
        self.devices = devices
        self.providers: dict[str, Provider] = {}
        self.retry = retry or RetryPolicy()
        self.observer = observer or PushObserver()
        for provider in providers:
            self.register(provider)

    def register(self, provider: Provider) -> None:
        """Route `provider.name` to `provider`, replacing any earlier one of that name."""
        self.providers[provider.name] = provider

    async def send_to_user(
        self, namespace: str, user_id: str, message: PushMessage, *, deadline: float | None = None
    ) -> SendReport:
        deadline = deadline if deadline is not None else time.monotonic() + DEFAULT_SEND_TIMEOUT
        devices = await self.devices_for(namespace, user_id, message)
        return await self.send_to_devices(namespace, devices, message, deadline=deadline)

    async def devices_for(self, namespace: str, user_id: str, message: PushMessage) -> list[Device]:
        """The user's devices (with tokens) that `message` targets."""
        if not user_id:
            raise ValueError("user id is required")
        try:
            devices = await self.devices.list_user_devices(namespace, user_id, with_tokens=True)
        except StoreError as exc:
            LOG.error("push: device lookup failed in namespace %s: %s", namespace, exc)
            raise PushUnavailable("device lookup failed") from None
        if message.target_provider:
            devices = [d for d in devices if d.provider == message.target_provider]
        elif message.exclude_provider:
            devices = [d for d in devices if d.provider != message.exclude_provider]
        return devices

    def in_store(self, namespace: str, devices: Sequence[Device], message: PushMessage
                 ) -> tuple[list[tuple[str, Sequence[Sequence[Any]]]], dict[str, DeviceResult]]:
        """For the devices whose provider delivers by writing to the store (`InStoreProvider`: the
        outbox), the statements that deliver them, for a durable send to commit with its accept, and
        each one's result by device row id, true once those statements are committed (then call
        `committed_in_store`). Other devices are left to `send_to_devices`."""
        groups: dict[str, list[Delivery]] = defaultdict(list)
        for device in devices:
            if self.delivers_in_store(device.provider):
                groups[device.provider].append(Delivery(
                    namespace, device.user_id, device.device_id, device.id, device.token, message, device.updated_at
                ))
        steps: list[tuple[str, Sequence[Sequence[Any]]]] = []
        results: dict[str, DeviceResult] = {}
        for name, deliveries in groups.items():
            provider = cast(InStoreProvider, self.providers[name])
            steps.extend(provider.store_steps(deliveries))
            for d in deliveries:
                results[d.device_row_id] = DeviceResult(d.device_id, name, True, 200, attempts=1, state="delivered")
        return steps, results

    def delivers_in_store(self, provider: str) -> bool:
        """Whether `provider`'s deliveries are writes to the store (`in_store`)."""
        # Not isinstance(): a runtime-checkable Protocol's check walks the protocol's members, on every send.
        return getattr(self.providers.get(provider), "store_steps", None) is not None

    def committed_in_store(self, namespace: str, results: Iterable[DeviceResult]) -> None:
        """Account for deliveries `in_store` made, once their statements are committed."""
        for result in results:
            self.observer.delivery(namespace, result.provider, "success")

    async def send_to_devices(
        self, namespace: str, devices: Sequence[Device], message: PushMessage, *, deadline: float,
        durable: bool = False,
    ) -> SendReport:
        """Deliver to `devices`; with `durable` the caller records each result and reads receipts back
        itself (`Delivery.durable`)."""
        results: dict[str, DeviceResult] = {}
        groups: dict[str, list[Delivery]] = defaultdict(list)
        for device in devices:
            if device.provider not in self.providers:
                results[device.id] = DeviceResult(
                    device.device_id, device.provider, False, reason="UnknownProvider",
                    message=f"provider {device.provider!r} is not configured for this namespace", state="failed",
                )
                continue
            groups[device.provider].append(Delivery(
                namespace, device.user_id, device.device_id, device.id, device.token, message, device.updated_at,
                durable,
            ))
        batches = [
            self._deliver(self.providers[name], deliveries[i:i + self.providers[name].max_batch], deadline)
            for name, deliveries in groups.items()
            for i in range(0, len(deliveries), max(1, self.providers[name].max_batch))
        ]
        # Batches run concurrently; a lone one needs no task of its own. (The outbox, which never waits, is
        # delivered in the accept's transaction instead: `in_store`.)
        sent = [await batches[0]] if len(batches) == 1 else await asyncio.gather(*batches)
        for batch in sent:
            for delivery, result in batch:
                results[delivery.device_row_id] = result
        return SendReport([results[d.id] for d in devices])

    async def _deliver(
        self, provider: Provider, deliveries: list[Delivery], deadline: float
    ) -> list[tuple[Delivery, DeviceResult]]:
        done: list[tuple[Delivery, DeviceResult]] = []
        pending = deliveries
        attempt = 0
        while pending:
            attempt += 1
            outcomes = await self._attempt(provider, pending, deadline)
            retry: list[Delivery] = []
            wait = 0.0
            for delivery, outcome in zip(pending, outcomes, strict=True):
                may_retry = outcome.kind is FailureKind.TRANSIENT and attempt < self.retry.max_attempts
                if may_retry:
                    wait = max(wait, self.retry.delay(attempt, outcome.retry_after))
                    if time.monotonic() + wait < deadline:
                        retry.append(delivery)
                        continue
                done.append((delivery, await self._finish(provider, delivery, outcome, attempt)))
            if retry:
                await asyncio.sleep(wait)
            pending = retry
        return done

    async def _attempt(self, provider: Provider, deliveries: list[Delivery], deadline: float) -> list[Outcome]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return [Outcome.failed(FailureKind.TRANSIENT, "Timeout", "the send deadline passed")] * len(deliveries)
        try:
            async with asyncio.timeout(remaining):
                outcomes = await provider.send(deliveries)
        except TimeoutError:
            return [Outcome.failed(FailureKind.TRANSIENT, "Timeout", "the send deadline passed")] * len(deliveries)
        except Exception as exc:  # a provider bug must cost one device result, never the whole send
            tokens = [d.token for d in deliveries]
            # No traceback: exception text and frames may hold tokens and URLs.
            LOG.error("push: provider %s failed unexpectedly: %s: %s", provider.name, type(exc).__name__,
                      redact(str(exc), *tokens))
            return [Outcome.failed(FailureKind.PERMANENT, "ProviderError", redact(str(exc), *tokens))] * len(deliveries)
        if len(outcomes) != len(deliveries):
            return [Outcome.failed(FailureKind.PERMANENT, "ProviderError", "provider returned a wrong result count")
                    ] * len(deliveries)
        return outcomes

    async def _finish(self, provider: Provider, delivery: Delivery, outcome: Outcome, attempts: int) -> DeviceResult:
        ns = delivery.namespace
        self.observer.delivery(ns, provider.name, "success" if outcome.success else (
            outcome.kind.value if outcome.kind else "failed"))
        if outcome.success:
            return DeviceResult(delivery.device_id, provider.name, True, outcome.status or 200, attempts=attempts,
                                state="delivered", receipt_id=outcome.receipt_id)
        reason = redact(outcome.reason, delivery.token) or "Failed"
        text = redact(outcome.message, delivery.token)
        unregistered = outcome.kind is FailureKind.DEAD_TARGET
        if unregistered:
            await self._prune(provider, delivery, outcome)
        LOG.info("push: %s delivery to device %s in %s failed: %s %s %s", provider.name, delivery.device_row_id, ns,
                 outcome.status, reason, text)
        state = "dead" if unregistered else "queued" if outcome.kind is FailureKind.TRANSIENT else "failed"
        return DeviceResult(delivery.device_id, provider.name, False, outcome.status, reason, text, unregistered,
                            attempts, state, outcome.retry_after)

    async def _prune(self, provider: Provider, delivery: Delivery, outcome: Outcome) -> None:
        try:
            pruned = await self.devices.prune_device(delivery.namespace, delivery.device_row_id, outcome.dead_since)
        except StoreError as exc:
            LOG.warning("push: could not prune dead device %s: %s", delivery.device_row_id, exc)
            return
        if pruned:
            self.observer.pruned(delivery.namespace, provider.name)
            LOG.info("push: pruned dead %s device %s in %s", provider.name, delivery.device_row_id, delivery.namespace)
