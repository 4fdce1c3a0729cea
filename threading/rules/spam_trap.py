"""A web form submission whose hidden spam-trap field was filled is quarantined (R-CH-5).

People never see the field; bots fill every field they find. The submission is kept,
not dropped, because a browser's autofill may have filled it for a person: an admin who
finds a real request there replays it (`helpgate quarantine replay`), and a replay passes
this rule as it passes the throttle.
"""

from helpgate.threading.context import Action, Context
from helpgate.threading.directory import Directory
from helpgate.threading.message import SPAM_TRAP_HEADER

NAME = "spam_trap"
DESCRIPTION = "quarantine web form submissions whose hidden spam-trap field was filled"


def apply(ctx: Context, directory: Directory) -> None:
    trap = ctx.message.headers.get(SPAM_TRAP_HEADER)
    if trap and not ctx.replay:
        ctx.stop(NAME, Action.QUARANTINED,
                 f"the web form's hidden spam-trap field was filled in ({trap!r}): a bot, "
                 "most likely; replay it if it is a person's request")
