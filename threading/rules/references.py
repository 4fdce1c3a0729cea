"""In-Reply-To/References pointing at our mail or a stored mail identify the ticket (R-TH-1).

A client that drops the subject marker still threads: our Message-IDs encode the ticket
number, and Message-IDs of mails already stored on a ticket are looked up.
"""

from helpgate.threading.context import Context
from helpgate.threading.directory import Directory
from helpgate.threading.markers import ticket_of_message_id

NAME = "references"
DESCRIPTION = "match the ticket of a message this one replies to"


def apply(ctx: Context, directory: Directory) -> None:
    if ctx.decision.ticket is not None:
        return
    # The nearest parent first: In-Reply-To, then References from the newest end.
    ids = list(dict.fromkeys([*ctx.message.in_reply_to, *reversed(ctx.message.references)]))
    if not ids:
        return
    domain = ctx.config.mail.message_id_domain
    for message_id in ids:
        number = ticket_of_message_id(message_id, domain)
        if number is None:
            continue
        ticket = directory.ticket_by_number(number)
        if ticket is not None:
            ctx.decision.ticket = ticket
            ctx.fire(NAME, f"replies to our message {message_id}")
            return
    ticket = directory.ticket_by_message_ids(ids)
    if ticket is not None:
        ctx.decision.ticket = ticket
        ctx.fire(NAME, f"replies to a mail stored on ticket {ticket.number}")
