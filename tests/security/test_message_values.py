"""Findings 1 and 2: a message's values must not escape the parser, and `data` nesting is bounded.

Attack: a guest (or an HTTP caller) sends ``{"title":"x","data":{"a":<5000 digits>}}`` or JSON nested
hundreds deep. Today's parser lets `ValueError` / `RecursionError` escape: the guest gets UNAVAILABLE
(documented as transient, so SDKs retry), every call logs a full traceback, and the refused calls count
against neither ``max_sends`` nor the rate limit. Nested ``data`` is accepted, then breaks the outbox.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.gateway.harness import GatewayServer, create_tenant
from tests.runtime.helpers import FakeSender
from wasmhost.push.message import MAX_DATA_DEPTH, MessageError, parse_message
from wasmhost.runtime import Limits, Runtime, abi

HUGE_INT = '{"title":"x","data":{"a":' + "9" * 5000 + "}}"
DEEP_ARRAY = '{"title":"x","data":{"a":' + "[" * 960 + "]" * 960 + "}}"
#: JSON allows the escape; no UTF-8 text can hold the result.
LONE_SURROGATE = '{"title":"x\\ud800","data":{"k\\udfff":1}}'


def nested_data(depth: int) -> dict[str, object]:
    """A `data` object `depth` levels deep (the data object itself is level 1)."""
    inner: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        inner = {"k": inner}
    return inner


def nested(depth: int) -> str:
    return json.dumps({"title": "x", "data": nested_data(depth)})


#: Sends the message in its input (after a u32 count) `count` times; the output is each call's code.
SENDER = """(module
  (import "wasmhost" "input_len" (func $ilen (result i32)))
  (import "wasmhost" "input_read" (func $iread (param i32 i32) (result i32)))
  (import "wasmhost" "output_write" (func $out (param i32 i32) (result i32)))
  (import "wasmhost" "push_send_to_user" (func $send (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "u")
  (func (export "handle") (result i32)
    (local $n i32) (local $len i32) (local $i i32)
    (local.set $len (call $ilen))
    (drop (call $iread (i32.const 1024) (local.get $len)))
    (local.set $n (i32.load (i32.const 1024)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store (i32.add (i32.const 65536) (i32.mul (local.get $i) (i32.const 4)))
        (call $send (i32.const 16) (i32.const 1) (i32.const 1028) (i32.sub (local.get $len) (i32.const 4))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (drop (call $out (i32.const 65536) (i32.mul (local.get $n) (i32.const 4))))
    (i32.const 0)))"""


@pytest.mark.parametrize("raw", [HUGE_INT, DEEP_ARRAY, nested(MAX_DATA_DEPTH + 1), '{"data":{"a":NaN}}',
                                 '{"data":{"a":1e400}}', '{"data":{"a":' + "9" * 30 + "}}", LONE_SURROGATE])
def test_the_parser_refuses_with_a_message_error(raw: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_message(raw)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert parse_message(nested(MAX_DATA_DEPTH)).data == nested_data(MAX_DATA_DEPTH)


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = Runtime(FakeSender())
    try:
        yield rt
    finally:
        await rt.aclose()


@pytest.mark.parametrize("raw", [HUGE_INT, DEEP_ARRAY, nested(MAX_DATA_DEPTH + 1)])
async def test_a_guest_gets_inval_without_a_traceback_and_refusals_count(
    runtime: Runtime, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 20
    caplog.set_level(logging.DEBUG)
    result = await runtime.invoke("acme", SENDER, struct.pack("<I", calls) + raw.encode(), Limits(max_sends=5))
    assert result.code == 0, result.to_dict()
    codes = list(struct.unpack(f"<{calls}i", result.output_bytes))
    # Refused messages count against max_sends: after 5 attempts, the cap answers.
    assert codes == [abi.INVAL] * 5 + [abi.LIMIT] * (calls - 5)
    assert not any(r.exc_info for r in caplog.records), "a guest made the host log a traceback"
    assert "Traceback" not in caplog.text


async def test_refused_messages_count_against_the_rate_limit(runtime: Runtime) -> None:
    class Limiter:
        def __init__(self) -> None:
            self.seen = 0

        def try_acquire(self, namespace: str) -> bool:
            self.seen += 1
            return self.seen <= 3

    limiter = Limiter()
    rt = Runtime(FakeSender(), send_limiter=limiter)
    try:
        result = await rt.invoke("acme", SENDER, struct.pack("<I", 6) + HUGE_INT.encode())
    finally:
        await rt.aclose()
    assert list(struct.unpack("<6i", result.output_bytes)) == [abi.INVAL] * 3 + [abi.RATE_LIMITED] * 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    gw = GatewayServer(Path(tmp_path_factory.mktemp("messages")), allow_private_endpoints=True).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.mark.parametrize("raw", [HUGE_INT, DEEP_ARRAY, nested(MAX_DATA_DEPTH + 1), nested(255),
                                 '{"data":{"a":1e400}}', LONE_SURROGATE])
def test_http_send_answers_400_naming_the_problem(
    server: GatewayServer, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = create_tenant(server, f"msg-{abs(hash(raw)) % 10**8}")
    tenant.user("alice").post("/v1/push/devices", json={"device_id": "p", "provider": "outbox", "token": "t"})
    body = raw.replace('{"title"', '{"user_id":"alice","title"', 1).replace('{"data"', '{"user_id":"alice","data"', 1)
    caplog.set_level(logging.DEBUG)
    r = tenant.admin.post("/v1/push/send", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "\n" not in error and len(error) < 300
    assert "Traceback" not in caplog.text
    # Nothing was accepted, and the outbox still reads.
    outbox = tenant.admin.get("/v1/push/outbox")
    assert outbox.status_code == 200 and outbox.json()["deliveries"] == []
    tenant.close()


async def test_a_failing_delivery_logs_one_line_not_a_traceback_per_send(caplog: pytest.LogCaptureFixture) -> None:
    rt = Runtime(FakeSender(error=RuntimeError("a bug the guest can hit")))
    caplog.set_level(logging.DEBUG)
    try:
        result = await rt.invoke("acme", SENDER, struct.pack("<I", 20) + b'{"title":"x"}', Limits(max_sends=50))
    finally:
        await rt.aclose()
    assert result.code == 0 and result.sends == []  # each refused at push_send_to_user (UNAVAILABLE)
    assert not any(r.exc_info for r in caplog.records), "a guest made the host log a traceback"
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) <= 1


@pytest.mark.parametrize("body", ['{"device_id":"\\ud800","provider":"outbox","token":"t"}',
                                  '{"device_id":"d","provider":"outbox","token":"t\\udc00"}'])
def test_a_lone_surrogate_anywhere_in_a_body_is_a_400_and_the_connection_lives(
    server: GatewayServer, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = create_tenant(server, f"sur-{abs(hash(body)) % 10**8}")
    caplog.set_level(logging.DEBUG)
    with tenant.user("alice") as alice:
        r = alice.post("/v1/push/devices", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "surrogate" in r.json()["error"], r.text
        assert alice.get("/v1/push/devices").status_code == 200  # same keep-alive connection
    assert "Traceback" not in caplog.text
    tenant.close()
