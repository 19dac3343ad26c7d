"""The console in a real browser (Debian's Chromium through Playwright) against a real `wasmhost serve`:
a tenant's whole journey, an operator's, and guest text that looks like markup staying text.

Each page is screenshotted into docs/screenshots/ for reviewers.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from svix.webhooks import Webhook as SvixWebhook

from tests.fleet.gateways import ADMIN_TOKEN, GatewayProcess
from tests.gateway.guests import BAD_IMPORT, LOGGER, WELCOME_WASM
from wasmhost.testing._server import FakeServer, Request, Response
from wasmhost.testing.ntfy import FakeNtfy

from .conftest import SHOTS, Loop

expect = pytest.importorskip("playwright.sync_api").expect

XSS = "<img src=x onerror=alert(1)>"


def _shot(page: Any, name: str, full_page: bool = True) -> None:
    """Screenshot the page, after checking every form field on it has a label."""
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('main input, main textarea, main select')]"
        ".filter(f => !f.labels.length && !f.getAttribute('aria-label')).map(f => f.outerHTML)")
    assert unlabelled == [], unlabelled
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def _namespace(gw: GatewayProcess) -> tuple[str, str, str]:
    """A fresh namespace made over the API: (name, api key, JWT secret for its users)."""
    name = f"shop-{secrets.token_hex(3)}"
    r = httpx.post(f"{gw.url}/v1/namespaces", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    secret = secrets.token_hex(32)
    r = httpx.put(f"{gw.url}/v1/namespace/auth", json={"alg": "HS256", "key": secret},
                  headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return name, key, secret


def _register(
    gw: GatewayProcess, namespace: str, secret: str, user: str, device: str, provider: str, token: str
) -> None:
    """What the tenant's app does: register a device with the user's own JWT."""
    user_jwt = jwt.encode({"sub": user, "exp": int(time.time()) + 600}, secret, algorithm="HS256")
    r = httpx.post(f"{gw.url}/v1/push/devices", json={"device_id": device, "provider": provider, "token": token},
                   headers={"Authorization": f"Bearer {user_jwt}", "X-Wasmhost-Namespace": namespace})
    assert r.status_code == 200, r.text


def _sign_in(page: Any, gw: GatewayProcess, credential: str) -> None:
    page.goto(f"{gw.url}/console")
    page.get_by_label("API key or operator token").fill(credential)
    page.get_by_role("button", name="Sign in").click()


def _go(page: Any, link: str) -> None:
    page.get_by_role("navigation", name="Pages").get_by_role("link", name=link).click()
    page.wait_for_selector(f"h1:text-is('{link}')")


def _chart_legend(page: Any, title: str) -> list[str]:
    figure = page.locator("figure.chart", has=page.locator(f"figcaption:text-is('{title}')"))
    return sorted(figure.locator(".legend li").all_inner_texts())


def test_a_tenants_whole_journey(page: Any, gateway: GatewayProcess, ntfy: FakeNtfy, tmp_path: Path) -> None:
    namespace, key, secret = _namespace(gateway)

    page.goto(f"{gateway.url}/console")
    page.get_by_role("button", name="Sign in").wait_for()
    # Keyboard first: the field has focus, Tab reaches the button.
    field_id = page.get_by_label("API key or operator token").get_attribute("id")
    assert page.evaluate("document.activeElement.id") == field_id
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Sign in"
    _shot(page, "01-sign-in")
    page.get_by_label("API key or operator token").fill("whk_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("401: invalid or revoked API key").wait_for()
    page.get_by_label("API key or operator token").fill(key)
    page.keyboard.press("Enter")
    page.get_by_text(f"namespace {namespace}").wait_for()
    page.get_by_text("No functions yet").wait_for()
    assert key not in page.url and page.context.cookies() == []
    assert page.evaluate("sessionStorage.getItem('wasmhost.console.credential')") == key

    # Usage before anything happened: empty charts.
    _go(page, "Usage")
    page.get_by_text("No deliveries yet.").wait_for()
    assert _chart_legend(page, "Deliveries per minute, by provider and outcome") == []

    # Push setup: the outbox, then ntfy (a refused document first: the error sits next to its field).
    _go(page, "Push setup")
    outbox = page.locator("section[data-provider=outbox]")
    outbox.get_by_role("button", name="Save outbox").click()
    page.get_by_text("outbox saved.").wait_for()
    ntfy_card = page.locator("section[data-provider=ntfy]")
    ntfy_card.get_by_label("Server URL").fill("ftp://example.com")
    ntfy_card.get_by_label("Access token").fill("ntfy-access-token-123")
    ntfy_card.get_by_role("button", name="Save ntfy").click()
    url_field = ntfy_card.locator(".row", has=page.get_by_label("Server URL"))
    url_field.locator(".field-error").filter(has_text="base_url").wait_for()
    assert ntfy_card.get_by_label("Server URL").get_attribute("aria-invalid") == "true"
    ntfy_card.get_by_label("Server URL").fill(ntfy.url)
    ntfy_card.get_by_role("button", name="Save ntfy").click()
    page.get_by_text("ntfy saved.").wait_for()
    ntfy_card = page.locator("section[data-provider=ntfy]")
    assert "configured" in ntfy_card.locator("h2").inner_text()
    assert ntfy_card.get_by_label("Access token").input_value() == ""  # secrets are never shown again
    assert "ntfy-access-token-123" not in page.content()
    assert ntfy.url in ntfy_card.locator("dl.kv").inner_text()

    # The tenant's app registers two devices for alice, over the API.
    _register(gateway, namespace, secret, "alice", "phone", "outbox", "outbox-token-alice")
    _register(gateway, namespace, secret, "alice", "laptop", "ntfy", "alice-laptop")

    page.get_by_label("User id").fill("alice")
    page.get_by_role("button", name="Send test").click()
    report = page.locator(".send-report")
    report.get_by_text("2 of 2 devices").wait_for()
    assert sorted(report.locator("td[data-label=Provider]").all_inner_texts()) == ["ntfy", "outbox"]
    _shot(page, "03-push-setup", full_page=False)  # the configured providers come first

    # Sends: the test send, then one whose ntfy delivery fails 3 times (every attempt within the request):
    # pending until the delivery worker's retry, shown live.
    _go(page, "Sends")
    page.locator("details.send summary", has_text="completed").first.wait_for()
    ntfy.script["alice-laptop"] += ["500", "500", "500"]
    _go(page, "Push setup")
    page.get_by_label("User id").fill("alice")
    page.get_by_role("button", name="Send test").click()
    page.locator(".send-report").wait_for()
    _go(page, "Sends")
    page.get_by_label("State").select_option("pending")
    page.get_by_role("button", name="Filter").click()
    pending = page.locator("details.send", has_text="pending")
    pending.wait_for()
    assert pending.get_by_text("alice", exact=False).count() >= 1
    expect(pending.locator("td[data-label=Provider]")).to_have_text(["outbox", "ntfy"])
    _shot(page, "04-sends")
    page.get_by_label("State").select_option("")
    page.get_by_role("button", name="Filter").click()
    newest = page.locator("details.send").first
    expect(newest.locator("summary")).to_contain_text("completed", timeout=30_000)  # no reload: it updates
    expect(newest.locator("td[data-label=State]")).to_have_text(["delivered", "delivered"])
    assert int(newest.locator("td[data-label=Attempts]").nth(1).inner_text()) == 4

    # Devices: alice's two, never their tokens.
    _go(page, "Devices")
    page.get_by_label("User id").fill("alice")
    page.get_by_role("button", name="Look up").click()
    page.get_by_role("heading", name="Devices of alice").wait_for()
    assert sorted(page.locator("td[data-label='Device id']").all_inner_texts()) == ["laptop", "phone"]
    assert "outbox-token-alice" not in page.content()
    _shot(page, "05-devices")

    # Functions: a refused module shows the server's reason; welcome deploys and sends to both devices.
    _go(page, "Functions")
    bad = tmp_path / "bad.wat"
    bad.write_text(BAD_IMPORT)
    page.get_by_label("Module file (.wasm or .wat)").set_input_files(str(bad))
    page.get_by_role("button", name="Deploy").click()
    page.locator(".error", has_text="400: invalid module").wait_for()
    page.get_by_label("Module file (.wasm or .wat)").set_input_files(str(WELCOME_WASM))
    page.get_by_label("Function name").fill("welcome")
    page.get_by_label("Fuel").fill("5000000")
    page.get_by_role("button", name="Deploy").click()
    page.get_by_text("Deployed welcome").wait_for()
    detail = page.locator("section", has=page.get_by_role("heading", name="Function welcome"))
    assert "fuel=5000000" in detail.inner_text()
    published_before = len(ntfy.published)
    detail.get_by_label("Input (JSON or text)").fill('{"user": "alice", "name": "Alice"}')
    detail.get_by_role("button", name="Invoke").click()
    result = detail.locator(".result")
    result.get_by_text("welcomed alice: 2/2 devices").wait_for()
    assert "Fuel used" in result.inner_text() and " ms" in result.inner_text()
    assert sorted(result.locator("td[data-label=Provider]").all_inner_texts()) == ["ntfy", "outbox"]
    assert len(ntfy.published) == published_before + 1  # delivered to the fake ntfy server

    # Input it refuses: the guest logs why, and the recent invocations show both runs with logs.
    detail.get_by_label("Input (JSON or text)").fill('"not an object"')
    detail.get_by_role("button", name="Invoke").click()
    result.get_by_text("input must be a JSON object").wait_for()
    recent = detail.locator("details.recent-invocation")
    recent.nth(1).wait_for()
    assert recent.count() == 2
    assert "guest_error" in recent.nth(0).locator("summary").inner_text()
    recent.nth(0).locator("summary").click()
    assert "input must be a JSON object" in recent.nth(0).locator("ul.logs").inner_text()
    _shot(page, "02-functions")

    # Usage now shows the deliveries and invocations.
    _go(page, "Usage")
    page.locator(".legend li", has_text="ntfy success").wait_for()
    assert _chart_legend(page, "Deliveries per minute, by provider and outcome") == [
        "ntfy success", "ntfy transient", "outbox success"]
    assert _chart_legend(page, "Invocations per minute, by outcome") == ["guest_error", "ok"]
    _shot(page, "06-usage")

    # Delete a device from the console.
    _go(page, "Devices")
    page.get_by_label("User id").fill("alice")
    page.get_by_role("button", name="Look up").click()
    page.get_by_role("button", name="Delete device laptop").click()
    expect(page.locator("td[data-label='Device id']")).to_have_text(["phone"])

    # Readable at a phone's width.
    page.set_viewport_size({"width": 390, "height": 844})
    _go(page, "Functions")
    page.get_by_role("button", name="welcome").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, "07-functions-phone")

    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()
    assert page.evaluate("sessionStorage.length") == 0


def test_the_webhook_card_shows_the_secret_once_and_the_endpoints_health(
    page: Any, gateway: GatewayProcess, fakes: Loop
) -> None:
    namespace, key, secret = _namespace(gateway)
    received: list[Request] = []

    def handle(req: Request) -> Response:
        received.append(req)
        return Response(204)

    receiver = fakes.run(FakeServer(handle).start())
    try:
        _sign_in(page, gateway, key)
        page.get_by_text(f"namespace {namespace}").wait_for()
        _go(page, "Push setup")
        card = page.locator("section[data-card=webhook]")
        card.get_by_text("No webhook.").wait_for()
        url = card.get_by_label("Endpoint URL (https)")
        url.fill("ftp://example.com/hook")
        card.get_by_role("button", name="Add webhook").click()
        card.locator(".field-error").filter(has_text="url rejected").wait_for()  # next to its field
        assert url.get_attribute("aria-invalid") == "true"
        url.fill(f"{receiver.url}/hook")
        card.get_by_label("delivery.failed").uncheck()
        card.get_by_role("button", name="Add webhook").click()
        card.get_by_text("Webhook saved.").wait_for()
        signing = card.locator("[data-secret]").inner_text()
        assert signing.startswith("whsec_")
        assert "enabled" in card.locator("h2").inner_text()
        unlabelled = page.evaluate(
            "[...document.querySelectorAll('main input, main textarea, main select')]"
            ".filter(f => !f.labels.length && !f.getAttribute('aria-label')).map(f => f.outerHTML)")
        assert unlabelled == [], unlabelled
        r = httpx.get(f"{gateway.url}/v1/namespace/webhook", headers={"Authorization": f"Bearer {key}"})
        assert r.json()["events"] == ["delivery.dead_token", "send.completed"]

        # An event reaches the endpoint, signed with that secret; the card then shows the success, and the
        # secret is not shown again.
        httpx.put(f"{gateway.url}/v1/namespace/push-credentials/outbox", json={},
                  headers={"Authorization": f"Bearer {key}"}).raise_for_status()
        _register(gateway, namespace, secret, "alice", "phone", "outbox", "outbox-token-hook")
        httpx.post(f"{gateway.url}/v1/push/send", json={"user_id": "alice", "title": "hi"},
                   headers={"Authorization": f"Bearer {key}"}).raise_for_status()
        deadline = time.monotonic() + 15
        while not received:
            assert time.monotonic() < deadline, "no webhook request"
            time.sleep(0.05)
        SvixWebhook(signing).verify(received[0].body, dict(received[0].headers))
        deadline = time.monotonic() + 15
        while True:  # the attempt's outcome is recorded just after the receiver answers
            _go(page, "Sends")
            _go(page, "Push setup")
            last_success = card.locator("dt:text-is('Last success') + dd")
            last_success.wait_for()
            if last_success.inner_text() != "never":
                break
            assert time.monotonic() < deadline, "the success was not shown"
        assert signing not in page.content()
        assert card.get_by_label("delivery.failed").is_checked() is False

        card.get_by_role("button", name="Remove webhook").click()
        card.get_by_text("Webhook removed.").wait_for()
        card.get_by_text("No webhook.").wait_for()
    finally:
        fakes.run(receiver.aclose())


def test_guest_text_that_looks_like_markup_stays_text(page: Any, gateway: GatewayProcess) -> None:
    namespace, key, _ = _namespace(gateway)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _sign_in(page, gateway, key)
    page.get_by_text("No functions yet").wait_for()
    # Deploy by dropping a file on the drop zone (a real drop event carrying a File).
    drop = page.locator(".drop")
    transfer = page.evaluate_handle(
        """text => { const t = new DataTransfer(); t.items.add(new File([text], "logger.wat")); return t; }""", LOGGER)
    drop.dispatch_event("drop", {"dataTransfer": transfer})
    drop.get_by_text("Selected: logger.wat").wait_for()
    assert page.get_by_label("Function name").input_value() == "logger"
    page.get_by_role("button", name="Deploy").click()
    page.get_by_text("Deployed logger").wait_for()
    page.get_by_role("button", name="logger").click()
    detail = page.locator("section", has=page.get_by_role("heading", name="Function logger"))
    # The page settles first (the list refresh after the deploy may redraw the detail, input and all).
    detail.get_by_text("No invocations yet.").wait_for()
    page.wait_for_load_state("networkidle")
    detail.get_by_label("Input (JSON or text)").fill(XSS)
    expect(detail.get_by_label("Input (JSON or text)")).to_have_value(XSS)
    detail.get_by_role("button", name="Invoke").click()
    logs = detail.locator(".result ul.logs li")
    # Waits until the result is rendered whole (the page may redraw it while recent invocations refresh).
    expect(logs).to_have_count(5)
    for i in range(5):
        expect(logs.nth(i)).to_contain_text(XSS)
    detail.locator("details.recent-invocation summary").first.click()
    assert XSS in detail.locator("details.recent-invocation ul.logs").first.inner_text()
    page.wait_for_timeout(300)  # give an image error handler the time it would need
    assert dialogs == []
    assert page.locator("main img").count() == 0  # shown as text, never parsed into an element
    assert page.evaluate("[...document.querySelectorAll('[onerror]')].length") == 0


def test_an_operators_journey(page: Any, gateway: GatewayProcess) -> None:
    _sign_in(page, gateway, "not-the-operator-token-but-long-enough-0000")
    page.locator(".error").filter(has_text="401").wait_for()
    _sign_in(page, gateway, ADMIN_TOKEN)
    page.locator("h1", has_text="Namespaces").wait_for()
    assert page.get_by_role("navigation", name="Pages").get_by_role("link").all_inner_texts() == [
        "Namespaces", "Gateway health"]

    name = f"acme-{secrets.token_hex(3)}"
    page.get_by_label("Namespace name").fill(name)
    page.get_by_role("button", name="Create namespace").click()
    first_key = page.locator(".new-key .secret").inner_text()
    assert re.fullmatch(r"whk_\S+", first_key)
    page.get_by_role("button", name=f"Keys of {name}").click()
    keys = page.locator("section", has=page.get_by_role("heading", name=f"Keys of {name}"))
    keys.locator("td[data-label='Key id']").first.wait_for()
    first_id = keys.locator("td[data-label='Key id']").inner_text()
    keys.get_by_role("button", name="Create key").click()
    second_key = keys.locator(".new-key .secret").inner_text()
    assert second_key.startswith("whk_") and second_key != first_key
    keys.locator("td[data-label='Key id']").nth(1).wait_for()
    _shot(page, "08-operator-namespaces")

    page.once("dialog", lambda d: d.accept())
    keys.get_by_role("button", name=f"Revoke {first_id}").click()
    expect(keys.locator("td[data-label='Key id']")).to_have_count(1)
    assert keys.locator("td[data-label='Key id']").inner_text() != first_id
    assert second_key not in page.content() or keys.locator(".new-key").count() == 0

    _go(page, "Gateway health")
    page.get_by_text("reachable").wait_for()
    page.locator("td", has_text="wasmhost_invocations_in_flight").wait_for()
    _shot(page, "09-operator-health")

    page.get_by_role("button", name="Sign out").click()
    _sign_in(page, gateway, first_key)
    page.get_by_text("401: invalid or revoked API key").wait_for()
    page.get_by_label("API key or operator token").fill(second_key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"namespace {name}").wait_for()

    # The key is revoked while the tenant is signed in: the next request sends the tab back to sign-in.
    operator = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    key_id = httpx.get(f"{gateway.url}/v1/namespaces/{name}/keys", headers=operator).json()["keys"][0]["key_id"]
    r = httpx.delete(f"{gateway.url}/v1/namespaces/{name}/keys/{key_id}", headers=operator)
    assert r.status_code == 200, r.text
    page.get_by_role("navigation", name="Pages").get_by_role("link", name="Usage").click()
    page.get_by_text("Signed out: invalid or revoked API key").wait_for()
    assert page.evaluate("sessionStorage.length") == 0


@pytest.fixture(autouse=True)
def _gateway_log_on_failure(gateway: GatewayProcess) -> Iterator[None]:
    """After each test, the tail of the gateway's log (pytest shows it when the test failed)."""
    yield
    print(gateway.log()[-4000:])
