"""Trap messages for tenants: Rust names demangled, the panic machinery left out."""

from __future__ import annotations

import pytest

from wasmhost.runtime.traps import _demangle, clean_text


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
