"""Every request gets an id: the caller's X-Request-Id when it is sane, a new one otherwise.

The id is bound to the logging context for the whole request, so every line the request
causes carries it, and it is echoed on every answer, errors and 404s included. Registered
first (outermost), so the answers the problems middleware builds pass through here too.
"""

from __future__ import annotations

import re
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from orchestrator import logs

HEADER = "X-Request-Id"
MAX_LENGTH = 128
#: Printable ASCII: an id goes into logs and headers, where control bytes do harm.
_PRINTABLE = re.compile(rf"[\x20-\x7e]{{1,{MAX_LENGTH}}}")


def request_id(given: str | None) -> str:
    """The caller's id when printable and at most 128 characters, else a fresh uuid4 hex."""
    if given is not None and _PRINTABLE.fullmatch(given):
        return given
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id(request.headers.get(HEADER))
    with logs.bind(request_id=rid):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # one the problems middleware let through (3xx)
            exc.headers[HEADER] = rid
            raise
    if not response.prepared:
        response.headers[HEADER] = rid
    return response
