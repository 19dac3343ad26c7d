"""Trap messages for tenants: Rust names demangled, the panic machinery left out."""

from __future__ import annotations

import pytest

from wasmhost.runtime.traps import _demangle, clean_text, describe_trap_text


@pytest.mark.parametrize(
    ("mangled", "plain"),
    [
        ("_ZN4core6result13unwrap_failed17h4646d8d0c3873241E", "core::result::unwrap_failed"),
        ("_ZN4core9panicking9panic_str17hae39ed38f8bbb023E.137", "core::panicking::panic_str"),
        ("_ZN49_$LT$order..Order$u20$as$u20$core..fmt..Debug$GT$3fmt17h0123456789abcdefE",
         "<order::Order as core::fmt::Debug>::fmt"),
        ("handle", "handle"),
        ("_ZN3bad", "_ZN3bad"),
    ],
)
def test_rust_names_are_demangled(mangled: str, plain: str) -> None:
    assert _demangle(mangled) == plain


def test_wasmtime_notes_for_operators_are_dropped() -> None:
    text = ("error while executing at wasm backtrace:\n    0:   0x4efa - <unknown>!rust_panic\n"
            "note: using the `WASMTIME_BACKTRACE_DETAILS=1` environment variable may show more debugging "
            "information\n\nCaused by:\n    wasm trap: wasm `unreachable` instruction executed\n")
    assert clean_text(Exception(text)) == "wasm trap: wasm `unreachable` instruction executed"


def test_a_trap_reported_as_text_gets_the_same_words() -> None:
    # What wasmtime raises for a trap inside a component (an uncaught JavaScript exception in QuickJS).
    text = ("error while executing at wasm backtrace:\n    0: 0x100e16 - <unknown>!<wasm function 21>\n"
            "    1:   0x19b0 - <unknown>!<wasm function 69>\n    8:  0xfa32a - <unknown>!handle\n\n"
            "Caused by:\n    wasm trap: wasm `unreachable` instruction executed\n")
    message = describe_trap_text(text, "in handle")
    assert message is not None and message.startswith("wasm trap UNREACHABLE in handle: unreachable code")
    assert "uncaught exception" in message and message.endswith("guest frames: func[21] ← func[69] ← handle")
    only_internals = text.replace("!handle", "!<wasm function 3>")
    assert "guest frames" not in (describe_trap_text(only_internals, "in handle") or "")
    overflow = "error while executing\n\nCaused by:\n    wasm trap: call stack exhausted\n"
    assert describe_trap_text(overflow, "in handle") == (
        "wasm trap STACK_OVERFLOW in handle: call stack exhausted (unbounded recursion?)")
    assert describe_trap_text("some other failure", "in handle") is None
