"""Status timers: pending -> open when its until time passes, resolved -> closed after the
configured timeout (R-TS-3). The pipeline applies a ticket's due timers lazily when a
message arrives for it; this loop applies them to every ticket in the background.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from helpgate.config.schema import Config
from helpgate.gateway.status_service import status_service
from helpgate.ticketstore.statuses import due_tickets

log = logging.getLogger("helpgate.timers")
BATCH = 200


def run_due_timers(session: Session, config: Config, now: datetime) -> int:
    """Apply every due automatic status change; returns how many tickets moved."""
    service = status_service(config)
    moved = 0
    for ticket in due_tickets(session, config.statuses, now, BATCH):
        for change in service.apply_due(session, ticket, now):
            moved += 1
            log.info("ticket %s: %s by timer", ticket.number, change.to_status)
    return moved
