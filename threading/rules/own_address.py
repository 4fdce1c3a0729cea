"""Mail from one of our own addresses, or carrying our own Message-ID, is a loop (R-TH-8)."""

from helpgate.threading.context import Action, Context
from helpgate.threading.directory import Directory
from helpgate.threading.markers import is_own_message_id

NAME = "own_address"
DESCRIPTION = "ignore mail sent by helpgate itself (own address or own Message-ID)"


def apply(ctx: Context, directory: Directory) -> None:
    mail = ctx.config.mail
    own = {mail.address.lower(), *mail.own_addresses}
    if mail.reply_to:
        own.add(mail.reply_to.lower())
    sender = ctx.message.sender_email
    if sender in own:
        ctx.stop(NAME, Action.IGNORED, f"sent from our own address {sender}")
    elif is_own_message_id(ctx.message.message_id, mail.message_id_domain):
        ctx.stop(NAME, Action.IGNORED, "our own notification came back (own Message-ID)")
    elif "x-helpgate-ticket" in ctx.message.headers:
        ctx.stop(NAME, Action.IGNORED, "our own notification came back (X-Helpgate-Ticket)")
