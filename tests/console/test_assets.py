"""The console's assets: served from the package with a strict CSP, nothing else under /console, and
scripts that never turn a string into markup or code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from tests.gateway.harness import GatewayServer

STATIC = Path(str(resources.files("wasmhost.console").joinpath("static")))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    gw = GatewayServer(tmp_path_factory.mktemp("console")).start()
    try:
        yield gw
    finally:
        gw.stop()


def test_every_asset_is_served_with_a_strict_policy(server: GatewayServer) -> None:
    with server.client() as c:
        page = c.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["object-src"] == "'none'" and "unsafe" not in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        referenced = set(re.findall(r'(?:src|href)="console/([^"]+)"', page.text))
        assert len(referenced) == 3
        for path in sorted(STATIC.iterdir()):
            r = c.get(f"/console/{path.name}")
            assert r.status_code == 200 and r.content == path.read_bytes(), path.name
            assert r.headers["content-security-policy"] == csp
        assert referenced <= {p.name for p in STATIC.iterdir()}
        imports = {m for p in STATIC.glob("*.js") for m in re.findall(r'from "\./([^"]+)"', p.read_text())}
        assert imports <= {p.name for p in STATIC.iterdir()}
        for missing in ("/console/", "/console/nope.js", "/console/%2e%2e%2f__init__.py", "/console/..%2fconsole.css"):
            r = c.get(missing)
            assert r.status_code == 404 and r.json() == {"error": "Not Found"}, missing
        assert not any(p.startswith("/console") for p in c.get("/openapi.json").json()["paths"])


def test_assets_never_build_markup_from_strings() -> None:
    """Tenant and guest text reaches the page only as text nodes (dom.js `h`): no HTML parsing sinks,
    no string-to-code, no inline handlers or styles that the CSP would have to allow."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\(\"on"
    )
    for path in STATIC.glob("*.js"):
        assert not sinks.search(path.read_text()), path.name
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)  # every script is a file
    assert not re.search(r"\s(on[a-z]+|style)=", html)
