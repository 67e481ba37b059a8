"""Aptly: PATCH {base}/v1/actions/{actionId}/cancel-action; the 200 envelope confirms.

The answer is {statusCode, timestamp, message, data}; data.status is kept on the
cancellation. Aptly publishes no production base URL, so APTLY_BASE_URL must be set.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import aiohttp
from pydantic import BaseModel, ConfigDict, StringConstraints

from orchestrator.domain.model import CancelResult
from orchestrator.providers import base


class AptlyParams(BaseModel):
    """The body of the cancel call; the ids are UUIDs."""

    model_config = ConfigDict(extra="forbid")

    status: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    documentId: uuid.UUID | None = None
    roleId: uuid.UUID | None = None
    delegationId: uuid.UUID | None = None
    decisionId: uuid.UUID | None = None


def _message(answer: base.Answer) -> str:
    body = answer.body if isinstance(answer.body, dict) else {}
    return str(body.get("message") or f"{answer.path} answered {answer.status}")


class Aptly(base.Provider):
    name = "aptly"
    params_model = AptlyParams

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        parsed = base.parse_params(AptlyParams, params, self.name)
        return parsed.model_dump(mode="json", exclude_none=True)

    def check_account(self, account: base.Account) -> str | None:
        if account.base_url is None:
            return (
                f"aptly account {account.name!r} has no base URL: set APTLY_BASE_URL "
                "(Aptly publishes no default)"
            )
        if account.secret is None:
            return f"aptly account {account.name!r} has no token (APTLY_TOKEN)"
        return None

    async def cancel(
        self, http: aiohttp.ClientSession, account: base.Account, target: base.Target
    ) -> CancelResult:
        assert account.secret is not None
        action = base.segment(target.resource_id)
        path = f"/v1/actions/{action}/cancel-action"
        answer = await base.call(
            http,
            account,
            "PATCH",
            path,
            headers={"Authorization": f"Bearer {account.secret.get_secret_value()}"},
            json=target.params,
        )
        if not isinstance(answer, base.Answer):
            return answer
        body = answer.body if isinstance(answer.body, dict) else {}
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        return base.classify_cancel(
            answer,
            message=_message(answer),
            provider_state={"status": data.get("status")} if data else None,
        )
