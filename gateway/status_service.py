"""The status-change service as the gateway assembles it: the store's StatusService with
the Notifier as its listener, so a change queues the same notifications whoever makes it
(a timer, an arriving message, a reopen, the CLI). Built here because the gateway owns
assembly: the ticket store must not import the outbound side.
"""

from __future__ import annotations

from helpgate.config.schema import Config
from helpgate.outbound.notify import Notifier
from helpgate.ticketstore.statuses import StatusService


def status_service(config: Config, notifier: Notifier | None = None,
                   quiet: bool = False) -> StatusService:
    """The service; `quiet` records changes without queueing notifications (an import)."""
    if quiet:
        return StatusService(config.statuses)
    return StatusService(config.statuses, (notifier or Notifier(config)).status_change)
