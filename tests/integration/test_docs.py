"""/docs renders the description with files served by the app itself: no CDN, works offline."""

from __future__ import annotations

import re

from tests.integration.conftest import Harness


async def test_docs_page_loads_only_its_own_files(harness: Harness) -> None:
    response = await harness.client.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page), (
        "the page must not load from elsewhere"
    )
    assert '"/openapi.json"' in page
    loaded = re.findall(r"(?:src|href)=\"([^\"]+)\"", page)
    assert {"/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js"} <= set(loaded)
    for path in loaded:
        asset = await harness.client.get(path)
        assert asset.status == 200, path
        assert len(await asset.read()) > 0, path
    bundle = await (await harness.client.get("/docs/swagger-ui-bundle.js")).text()
    assert "isOAS31" in bundle, "Swagger UI 5 is needed to read OpenAPI 3.1"
    css = await harness.client.get("/docs/swagger-ui.css")
    assert css.content_type == "text/css"


async def test_only_the_pages_files_are_served(harness: Harness) -> None:
    response = await harness.client.get("/docs/swagger-editor-bundle.js")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
