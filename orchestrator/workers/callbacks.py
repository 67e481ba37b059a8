"""Delivers completion callbacks from the outbox: at least once, signed, never redirected.

Each pass claims due deliveries with a lease (SKIP LOCKED, so instances share the work),
POSTs each cancellation to its callback_url signed as Standard Webhooks says, through its own
client that reaches only where ORCH_CALLBACK_HOSTS allows (callback_net.py), and records
the attempt: a 2xx ends the delivery, anything else is tried again with backoff until the
window after the terminal state has passed (domain/callbacks.py decides). The webhook-id
is the delivery's, the same on every attempt, so receivers can drop repeats.

Each delivery is signed with its receiver's own secret, derived from ORCH_CALLBACK_SECRET and
the name of the token that enqueued the cancellation (tokens.callback_secret; `orchestrator
callback-secret --token NAME` prints it): a callback one receiver got does not verify at
another's endpoint, so it cannot be replayed there.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import standardwebhooks

from orchestrator import tokens
from orchestrator.clock import Clock
from orchestrator.domain import callbacks
from orchestrator.domain.model import Cancellation
from orchestrator.metrics import Metrics
from orchestrator.store.outbox import Delivery, Outbox
from orchestrator.workers.callback_net import CallbackClient
from orchestrator.workers.dispatcher import worker_id

log = logging.getLogger(__name__)

USER_AGENT = "orchestrator-callbacks/1"


@dataclass(frozen=True)
class CallbackReport:
    delivered: int = 0
    retrying: int = 0
    gave_up: int = 0
    #: Attempts whose lease ran out before they were recorded (another claim took over).
    lost: int = 0

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.gave_up + self.lost


class CallbackSender:
    def __init__(
        self,
        outbox: Outbox,
        http: CallbackClient,
        secret: str,
        render: Callable[[Cancellation], bytes],
        policy: callbacks.DeliveryPolicy,
        clock: Clock,
        *,
        batch: int = 32,
        lease_s: float = 90.0,
        owner: str | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.outbox = outbox
        self.http = http
        self.secret = secret
        self._signers: dict[str, standardwebhooks.Webhook] = {}
        self.render = render
        self.policy = policy
        self.clock = clock
        self.batch = batch
        # A claim outlives the slowest attempt of its batch (they run side by side).
        self.lease_s = max(lease_s, (http.timeout.total or 0) * 2)
        self.owner = owner or worker_id()
        self.rng = rng or random.Random()
        self.metrics = metrics or Metrics()

    async def run_once(self) -> CallbackReport:
        """One pass: every due delivery claimed now is attempted once, side by side."""
        due = await self.outbox.claim(self.clock.now(), self.batch, self.owner, self.lease_s)
        if not due:
            return CallbackReport()
        outcomes = await asyncio.gather(*(self._deliver(d) for d in due))
        counts = {cause: 0 for cause in callbacks.AttemptCause}
        lost = 0
        for cause in outcomes:
            if cause is None:
                lost += 1
            else:
                counts[cause] += 1
        return CallbackReport(
            delivered=counts[callbacks.AttemptCause.DELIVERED],
            retrying=counts[callbacks.AttemptCause.FAILED],
            gave_up=counts[callbacks.AttemptCause.GAVE_UP],
            lost=lost,
        )

    def signer(self, receiver: str) -> standardwebhooks.Webhook:
        """The signer with `receiver`'s own secret (derived once, then kept)."""
        found = self._signers.get(receiver)
        if found is None:
            found = standardwebhooks.Webhook(tokens.callback_secret(self.secret, receiver))
            self._signers[receiver] = found
        return found

    def sign(
        self, webhook_id: str, at: datetime, body: bytes, receiver: str = tokens.ANONYMOUS
    ) -> dict[str, str]:
        """The Standard Webhooks headers for `body`, sent at `at`, signed for `receiver`."""
        timestamp = int(at.timestamp())
        # The package reads the datetime's fields as UTC whatever its zone: give it UTC.
        signature = self.signer(receiver).sign(
            webhook_id, datetime.fromtimestamp(timestamp, UTC), body.decode()
        )
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }

    async def _deliver(self, delivery: Delivery) -> callbacks.AttemptCause | None:
        body = self.render(delivery.cancellation)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **self.sign(
                delivery.webhook_id,
                self.clock.now(),
                body,
                tokens.receiver_of(delivery.cancellation.callback_receiver),
            ),
        }
        answer = await self.http.post(delivery.url, body, headers)
        now = self.clock.now()
        outcome = callbacks.after_attempt(
            answer, delivery.attempt, delivery.ended_at, now, self.policy, self.rng
        )
        if not await self.outbox.finish(delivery, outcome, now):
            log.warning(
                "callback %s for %s: lease lost before the attempt was recorded",
                delivery.webhook_id,
                delivery.cancellation.id,
            )
            return None
        self.metrics.callback_attempts.labels(outcome.cause.value).inc()
        level = logging.INFO if outcome.state is callbacks.DeliveryState.PENDING else logging.DEBUG
        if outcome.cause is callbacks.AttemptCause.GAVE_UP:
            level = logging.WARNING
        log.log(
            level,
            "callback %s for %s, attempt %d: %s (%s)",
            delivery.webhook_id,
            delivery.cancellation.id,
            delivery.attempt,
            outcome.cause.value,
            answer.status if answer.status is not None else answer.error,
            # the class only: a connect error's text would name addresses and ports
        )
        return outcome.cause
