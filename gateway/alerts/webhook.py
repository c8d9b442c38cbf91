"""The one HTTP POST of an alert to ``GATEWAY_ALERT_WEBHOOK_URL``."""

from __future__ import annotations

import logging

import httpx

from gateway.alerts.message import SIGNATURE_HEADER, signature

log = logging.getLogger("gateway.alerts")


class Webhook:
    def __init__(self, url: str, secret: bytes, timeout_s: float) -> None:
        self.url = url
        self.secret = secret
        # No redirects: a receiver that moved must be reconfigured, not followed with the body.
        self.client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def post(self, raw_body: bytes) -> int | None:
        """The receiver's status, or None if it could not be reached or did not answer in time."""
        headers = {"content-type": "application/json", SIGNATURE_HEADER: signature(self.secret, raw_body)}
        try:
            response = await self.client.post(self.url, content=raw_body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("alert webhook unreachable: %s: %s", exc.__class__.__name__, exc)
            return None
        return response.status_code

    async def aclose(self) -> None:
        await self.client.aclose()
