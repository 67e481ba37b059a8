"""The served OpenAPI description is valid and documents every route the app serves."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from tests.integration.conftest import Harness


async def test_openapi_is_valid_and_complete(harness: Harness) -> None:
    response = await harness.client.get("/openapi.json")
    assert response.status == 200
    spec = await response.json()
    validate(spec)
    served = set()
    for resource in harness.app.router.resources():
        path = resource.canonical
        # The dashboard (/ui, orchestrator/web/ui.py) serves HTML pages for people, not an
        # API: it is deliberately left out of the OpenAPI description.
        if path == "/ui" or path.startswith("/ui/"):
            continue
        served.add(re.sub(r"\{(\w+)\}", r"{\1}", path))
    documented = set(spec["paths"])
    assert served == documented, served ^ documented
    schemas = spec["components"]["schemas"]
    variants = {
        name: schemas[ref["$ref"].rsplit("/", 1)[1]]
        for name, ref in zip(
            schemas["CancellationIn"]["discriminator"]["mapping"],
            schemas["CancellationIn"]["oneOf"],
            strict=True,
        )
    }
    assert set(variants) == {"dropbox_sign", "truto", "aptly"}
    for provider, enqueue in variants.items():
        assert enqueue["additionalProperties"] is False
        assert enqueue["properties"]["provider"]["const"] == provider
        assert enqueue["properties"]["account"]["enum"] == ["default"]
        required = {"provider", "resource_id"} | ({"params"} if provider == "truto" else set())
        assert set(enqueue["required"]) == required
