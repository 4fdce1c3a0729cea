"""The ticket marker in the subject ("[#123]") names the ticket a message belongs to (R-TH-1)."""

from helpgate.threading.context import Context
from helpgate.threading.directory import Directory
from helpgate.threading.markers import format_marker, marker_numbers

NAME = "subject_marker"
DESCRIPTION = "match the ticket whose marker is in the subject"


def apply(ctx: Context, directory: Directory) -> None:
    if ctx.decision.ticket is not None:
        return
    marker = ctx.config.threading.marker
    numbers = marker_numbers(marker, ctx.message.subject)
    for number in numbers:
        ticket = directory.ticket_by_number(number)
        if ticket is not None:
            ctx.decision.ticket = ticket
            ctx.fire(NAME, f"subject marker {format_marker(marker, number)}")
            return
    if numbers:
        # A marker of a ticket that does not exist: a new ticket, and the trail says why.
        ctx.notes.append(f"{NAME}: marker {format_marker(marker, numbers[0])} names no ticket")
