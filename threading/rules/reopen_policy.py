"""Reopen or start anew: a customer's message to a resolved or closed ticket (R-TH-6).

Runs last and only sees what the matching rules proposed. Within the reopen window (per
ticket type and channel, first matching rule wins) the ticket reopens; after it, or when
the status model makes the state final, a new ticket is opened and linked to the old one.
"""

from helpgate.threading.context import Action, Context
from helpgate.threading.directory import Directory

NAME = "reopen_policy"
DESCRIPTION = "reopen a closed ticket within its window, else open a linked new one"


def apply(ctx: Context, directory: Directory) -> None:
    ticket = ctx.decision.ticket
    author = ctx.decision.author
    if ticket is None or (author is not None and author.kind == "employee"):
        return
    statuses = ctx.config.statuses
    state = statuses.states_by_id().get(ticket.status)
    if state is None or not state.closed:
        return
    if statuses.initial not in state.next:
        _new_ticket(ctx, f"ticket {ticket.number} is {ticket.status}, a final state")
        return
    window, source = ctx.config.reopen.window_for(ticket.type, ctx.message.channel)
    closed_at = ticket.closed_at or ctx.now
    if window is None:
        _reopen(ctx, f"{source} is forever")
    elif window.total_seconds() > 0 and ctx.now - closed_at <= window:
        _reopen(ctx, f"within {source} ({window}) of closing")
    else:
        _new_ticket(ctx, f"{ctx.now - closed_at} after closing, past {source} ({window})")


def _reopen(ctx: Context, why: str) -> None:
    ctx.decision.action = Action.REOPENED
    ctx.decision.new_status = ctx.config.statuses.initial
    ctx.fire(NAME, f"reopened: {why}")


def _new_ticket(ctx: Context, why: str) -> None:
    ctx.decision.previous_ticket = ctx.decision.ticket
    ctx.decision.ticket = None
    ctx.decision.new_status = None
    ctx.decision.action = Action.NEW_TICKET_AFTER_WINDOW
    ctx.fire(NAME, f"new linked ticket: {why}")
