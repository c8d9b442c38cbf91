"""What one gateway process shares between requests: a plain container, built at start-up.

The app's lifespan builds it; every route gets it the one way, :func:`state_of`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from starlette.requests import Request

from gateway.admin.keys import KeyStore
from gateway.admin.layout_upgrade import LayoutKeeper
from gateway.alerts.sender import AlertSender
from gateway.call.admission import Admission
from gateway.call.observe import Observer
from gateway.call.reserve import ReserveCancels
from gateway.call.settle import Settler
from gateway.core.settings import Settings
from gateway.ledger.orphan_sweep import OrphanSweeper
from gateway.money.pricing import PriceBook
from gateway.store.directory import KeyDirectory
from gateway.store.protocol import Redis
from gateway.upstream.routing import Router


@dataclass
class GatewayState:
    settings: Settings
    redis: Redis
    router: Router  # the upstream channels, their order and rest state
    prices: PriceBook
    keys: KeyStore
    directory: KeyDirectory  # key_id -> team, remembered per process
    settler: Settler
    observer: Observer
    admission: Admission
    cancels: ReserveCancels
    layout: LayoutKeeper  # the store's layout checked (and moved, once) before keys are used
    sweeper: OrphanSweeper  # releases dead processes' reservations of teams nobody calls
    alerts: AlertSender | None = None  # budget alerts to the webhook; None without a webhook URL


def state_of(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def instance_name() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"
