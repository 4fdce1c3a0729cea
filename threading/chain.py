"""The ordered rule chain: each rule a module with NAME, DESCRIPTION and apply().

The order is data (config `threading.rules`), as in Mailman's chains. Every rule reads the
typed Context and the Directory and writes only the Decision; the chain ends early when a
rule ignores or quarantines the message. The final action is settled here: a message that
matched no ticket opens one, one that matched becomes a comment, unless reopen_policy said
otherwise.
"""

from __future__ import annotations

from types import ModuleType

from helpgate.threading.context import Action, Context
from helpgate.threading.directory import Directory
from helpgate.threading.rules import (
    auto_reply,
    bounce,
    company_domain,
    conversation,
    own_address,
    quote_strip,
    references,
    reopen_policy,
    sender_identity,
    spam_trap,
    staff_auth,
    subject_marker,
    throttle,
    unknown_sender,
    waiting_for_customer,
)

RULES: dict[str, ModuleType] = {
    module.NAME: module
    for module in (own_address, bounce, auto_reply, spam_trap, throttle, subject_marker,
                   references,
                   sender_identity, staff_auth, company_domain, conversation, unknown_sender,
                   quote_strip,
                   waiting_for_customer, reopen_policy)
}


def decide(ctx: Context, directory: Directory) -> Context:
    """Run the configured rules in order and settle the action."""
    if spam_trap.NAME not in ctx.config.threading.rules:
        # A rule list written before the web form still keeps its spam trap shut.
        spam_trap.apply(ctx, directory)
        if ctx.stopped:
            return ctx
    for name in ctx.config.threading.rules:
        RULES[name].apply(ctx, directory)
        if ctx.stopped:
            return ctx
    if staff_auth.NAME not in ctx.config.threading.rules:
        # Who may speak as staff is not optional: a rule list written before the rule
        # existed still gets the check, so a forged From is never relayed as staff's.
        staff_auth.apply(ctx, directory)
    decision = ctx.decision
    if decision.text is None:
        decision.text = ctx.message.text
    if decision.action is None:
        decision.action = Action.COMMENT if decision.ticket is not None else Action.NEW_TICKET
    return ctx
