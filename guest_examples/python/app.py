"""notify-followers as a wasmhost:guest component (componentize-py).

Input:  {"author": "...", "followers": ["...", ...], "text": "..."}
Output: {"sent": n, "failed": m, "no_devices": k}

Every send is started before any is awaited, so deliveries run concurrently on the host.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host

BAD_INPUT = 1  # handle's own error code: the input is not what this function expects


def parse_input(text: str) -> tuple[str, list[str], str]:
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("input must be a JSON object")
    author, followers, body = doc.get("author"), doc.get("followers"), doc.get("text")
    if not isinstance(author, str) or not isinstance(body, str):
        raise ValueError('"author" and "text" must be strings')
    if not isinstance(followers, list) or not all(isinstance(f, str) for f in followers):
        raise ValueError('"followers" must be a list of strings')
    return author, followers, body


class WitWorld(wit_world.WitWorld):
    def handle(self) -> int:
        try:
            author, followers, text = parse_input(host.input())
        except ValueError as exc:
            host.log(host.Level.ERROR, f"bad input: {exc}")
            return BAD_INPUT
        message = json.dumps(
            {"title": f"{author} posted", "body": text, "data": {"author": author}}, ensure_ascii=False
        )
        # Send all first (each returns at once with a ticket), then wait for each.
        tickets = [host.push_send_to_user(user, message) for user in followers]
        sent = failed = no_devices = 0
        for user, ticket in zip(followers, tickets):
            if ticket < 0:
                host.log(host.Level.WARN, f"send to {user} refused: code {ticket}")
                failed += 1
                continue
            try:
                report = json.loads(host.push_wait(ticket))
            except Err as err:
                host.log(host.Level.WARN, f"send to {user} failed: code {err.value}")
                failed += 1
                continue
            if report["devices_attempted"] == 0:
                no_devices += 1
            elif report["ok"] and report["devices_succeeded"] > 0:
                sent += 1
            else:
                failed += 1
        summary = {"sent": sent, "failed": failed, "no_devices": no_devices}
        host.output_write(json.dumps(summary, separators=(",", ":")))
        return 0
