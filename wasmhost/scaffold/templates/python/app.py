"""__NAME__ — a wasmhost function (a wasmhost:guest component): pushes `text` to `user`'s devices.

input:  {"user": "alice", "text": "Your order A-17 has shipped"}
output: notified alice: 1/1 devices
return: 0 ok, 1 bad input, 2 the send failed, 3 an unexpected exception (its traceback is logged)

WASI is stubbed: use host.log, not print; there are no files, clock or network.
"""

import json
import traceback

import wit_world
from componentize_py_types import Err
from wit_world.imports import host


def run() -> int:
    try:
        doc = json.loads(host.input())
        user, text = doc["user"], doc["text"]
        if not isinstance(user, str) or not isinstance(text, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        host.log(host.Level.ERROR, 'bad input: expected {"user": "...", "text": "..."}')
        return 1
    ticket = host.push_send_to_user(user, json.dumps({"title": "__NAME__", "body": text}, ensure_ascii=False))
    try:
        if ticket < 0:
            raise Err(ticket)
        report = json.loads(host.push_wait(ticket))
    except Err as err:
        host.log(host.Level.ERROR, f"send to {user} failed: code {err.value}")
        return 2
    host.output_write(f"notified {user}: {report['devices_succeeded']}/{report['devices_attempted']} devices")
    return 0


class WitWorld(wit_world.WitWorld):
    def handle(self) -> int:
        try:
            return run()
        except Exception:  # the component's own panic hook: say what and where, then fail the invocation
            host.log(host.Level.ERROR, traceback.format_exc())
            return 3
