"""A chat goes on where it left off: a messenger message naming no ticket continues the
sender's latest ticket on that channel (R-CH-3).

Mail names its ticket (the subject marker, References); a chat does not, every message
is the next line of one conversation. So a message the adapter marks as chat (`chat`)
from a known contact joins their most recent ticket from the same channel; whether a
resolved or closed one reopens, or a new one starts, is reopen_policy's, per channel and
type as for mail (R-TH-6). A message that named a ticket, a staff member's, or one the
adapter marks as a fresh start (a /new command) is left alone.
"""

from helpgate.threading.context import Context
from helpgate.threading.directory import Directory

NAME = "conversation"
DESCRIPTION = "continue the sender's latest ticket on a chat channel"


def apply(ctx: Context, directory: Directory) -> None:
    message = ctx.message
    contact = ctx.decision.contact
    if not message.chat or ctx.decision.ticket is not None or contact is None:
        return
    ticket = directory.latest_ticket(contact.id, message.channel)
    if ticket is not None:
        ctx.decision.ticket = ticket
        ctx.fire(NAME, f"continues ticket {ticket.number} ({ticket.status}) on "
                       f"{message.channel}")
