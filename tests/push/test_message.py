from __future__ import annotations

import pytest

from wasmhost.push import MAX_MESSAGE_BYTES, MessageError, MessageTooBig, parse_message


def test_maps_every_field() -> None:
    msg = parse_message(b'{"title":"T","body":"B","data":{"k":1},"badge":3,"sound":"s","channel":"c",'
                        b'"priority":"high","ttl_seconds":60,"message_id":"m","content_available":true,'
                        b'"target_provider":"apns","exclude_provider":"ntfy"}')
    assert (msg.title, msg.body, msg.data, msg.badge, msg.sound, msg.channel, msg.priority, msg.ttl_seconds,
            msg.message_id, msg.content_available, msg.target_provider, msg.exclude_provider) == (
        "T", "B", {"k": 1}, 3, "s", "c", "high", 60, "m", True, "apns", "ntfy")
    assert parse_message(msg.to_dict()) == msg


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "empty"),
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b"[1]", "object"),
        (b'{"titel":"x"}', "unknown"),
        (b'{"priority":"urgent"}', "priority"),
        (b'{"badge":"1"}', "badge"),
        (b'{"badge":true}', "badge"),
        (b'{"data":[1]}', "data"),
        (b'{"title":5}', "title"),
        (b'{"ttl_seconds":-1}', "ttl_seconds"),
        (b'{"content_available":"yes"}', "content_available"),
        (('{"message_id":"' + "x" * 65 + '"}').encode(), "message_id"),
    ],
)
def test_rejects_invalid(raw: bytes, match: str) -> None:
    with pytest.raises(MessageError, match=match):
        parse_message(raw)


def test_size_limit_on_raw_bytes() -> None:
    body = "x" * (MAX_MESSAGE_BYTES - len('{"body":""}'))
    assert parse_message(f'{{"body":"{body}"}}'.encode()).body == body
    with pytest.raises(MessageTooBig):
        parse_message(f'{{"body":"{body}x"}}'.encode())


def test_visible_content() -> None:
    assert not parse_message(b'{"data":{"a":1}}').has_visible_content()
    assert not parse_message(b'{"badge":0}').has_visible_content()
    for raw in (b'{"title":"x"}', b'{"body":"x"}', b'{"sound":"x"}', b'{"badge":1}', b'{"content_available":true}'):
        assert parse_message(raw).has_visible_content()
