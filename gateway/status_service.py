"""The status-change and assignment services as the gateway assembles them: the store's
StatusService and AssignmentService with the Notifier as their listener, so a change
queues the same notifications whoever makes it (a timer, an arriving message, a reopen,
the CLI, the staff API). Built here because the gateway owns assembly: the ticket store
must not import the outbound side.
"""

from __future__ import annotations

from helpgate.config.schema import Config
from helpgate.outbound.notify import Notifier
from helpgate.ticketstore.assignments import AssignmentService
from helpgate.ticketstore.statuses import StatusService


def status_service(config: Config, notifier: Notifier | None = None,
                   quiet: bool = False) -> StatusService:
    """The service; `quiet` records changes without queueing notifications (an import)."""
    if quiet:
        return StatusService(config.statuses)
    return StatusService(config.statuses, (notifier or Notifier(config)).status_change)


def assignment_service(config: Config, notifier: Notifier | None = None) -> AssignmentService:
    """Assignments that tell the new assignee (notifications.employee_events)."""
    return AssignmentService((notifier or Notifier(config)).assignment)
