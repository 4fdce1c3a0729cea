"""A customer's reply to a ticket waiting for their answer returns it to open (R-TH-7)."""

from helpgate.threading.context import Context
from helpgate.threading.directory import Directory

NAME = "waiting_for_customer"
DESCRIPTION = "return a ticket waiting for the customer to open when they answer"


def apply(ctx: Context, directory: Directory) -> None:
    ticket = ctx.decision.ticket
    author = ctx.decision.author
    if ticket is None or (author is not None and author.kind == "employee"):
        return
    statuses = ctx.config.statuses
    if ticket.status in statuses.waiting_for_customer:
        ctx.decision.new_status = statuses.initial
        ctx.fire(NAME, f"customer answered: {ticket.status} -> {statuses.initial}")
