"""The dashboard: `GET /` is a page that draws the metrics endpoints' answers as charts,
and `/static/` serves its script, style sheet and the vendored Chart.js (static/VENDORED.md).

The page only reads the JSON endpoints, as any client would: it adds no query of its own."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")

# Everything the page loads comes from this server: a script or style that reached the
# internet (a CDN, a font) would fail on the air-gapped hosts analytics runs on, so the
# browser is told to refuse it rather than have it slip in unnoticed. `data:` is the
# blank favicon, which spares the browser a request for /favicon.ico.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC / "index.html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            # Revalidated on every visit: a page cached from an older release would call
            # its endpoints with an older script.
            "Cache-Control": "no-cache",
        },
    )


def add_dashboard(app: web.Application) -> None:
    """Mounts the page at `/` and its files under `/static/` on the API's application."""
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, follow_symlinks=False, show_index=False)
