"""SMS delivery: one outbox row becomes one SMS through the configured gateway (R-OUT-4).

The row's words (`Outgoing.content`) go through the SMS template of their kind and the
length rule (outbound/sms_text.py) to the number in E.164. The gateway's outcome maps
onto the outbox's: refused for good (bad number, credentials, money) -> parked with its
words; unavailable (5xx, 429, no connection) -> retried with backoff.

No provider takes an idempotency key, so a request that was written and got no answer
may have sent the SMS. Never send it again blindly (R-OUT-6):
- SMSC.ru takes our id (the row's) and answers a status query by it: the transport asks
  at once; "sent" is delivered, "not found" is retried — and every later attempt of a row
  asks again before it sends;
- the others cannot be asked: the row becomes "uncertain", the outbox's state for "may
  have gone out", for a person to decide (`helpgate outbox retry ID`).
"""

from __future__ import annotations

import logging

from helpgate.channels.sms.api import (
    Gateway,
    NoAnswer,
    Refused,
    SmsError,
    Unavailable,
    gateway,
)
from helpgate.config.schema import Config, SmsConfig
from helpgate.outbound.base import Outgoing
from helpgate.outbound.sms_text import e164, preview
from helpgate.ticketstore.outbox import DeliveryResult

log = logging.getLogger("helpgate.sms")
UNCERTAIN = ("{error}; {title} cannot be asked whether it went out, so it is not sent "
             "again by itself (`helpgate outbox retry {id}` sends it)")


def transport(config: Config) -> SmsTransport | None:
    """The SMS transport, when a gateway is configured ([sms] provider)."""
    return SmsTransport(config.sms) if config.sms.provider else None


class SmsTransport:
    channel = "sms"

    def __init__(self, settings: SmsConfig, provider: Gateway | None = None) -> None:
        self.settings = settings
        # An unknown provider or missing credentials stop `helpgate run` with one line.
        self.gateway = provider or gateway(settings)

    async def send(self, message: Outgoing) -> DeliveryResult:
        phone = e164(message.recipient, self.settings.default_country_code)
        if phone is None:
            return DeliveryResult.failed(f"{message.recipient!r} is not a phone number an "
                                         "SMS can be sent to")
        fitted = preview(self.settings, message.kind, message.content or message.text,
                         message.headers.get("X-Helpgate-Ticket"))
        if not fitted.text:
            return DeliveryResult.failed("nothing to send: the message has no text")
        if fitted.too_long:
            return DeliveryResult.failed(
                f"the text needs {fitted.parts} SMS parts, more than sms.max_parts "
                f"({self.settings.max_parts}); with sms.too_long = \"trim\" it is cut to fit")
        title = self.gateway.title
        if message.attempts and self.gateway.tracks_our_id:
            # An earlier attempt may have reached the provider: ask before sending.
            try:
                if await self.gateway.was_sent(phone, message.id):
                    log.info("outbox %s: %s has it from an earlier attempt", message.id, title)
                    return DeliveryResult.ok()
            except SmsError as exc:
                return DeliveryResult.retry(f"{title} could not say whether an earlier "
                                            f"attempt went out: {exc.message}")
        try:
            await self.gateway.send(phone, fitted.text, message.id)
        except Refused as exc:
            return DeliveryResult.failed(exc.message)
        except Unavailable as exc:
            return DeliveryResult.retry(exc.message, exc.retry_after)
        except NoAnswer as exc:
            return await self._no_answer(message, phone, exc)
        return DeliveryResult.ok()

    async def _no_answer(self, message: Outgoing, phone: str, exc: NoAnswer
                         ) -> DeliveryResult:
        title = self.gateway.title
        if not self.gateway.tracks_our_id:
            return DeliveryResult.unknown(UNCERTAIN.format(error=exc.message, title=title,
                                                           id=message.id))
        try:
            sent = await self.gateway.was_sent(phone, message.id)
        except SmsError as second:
            return DeliveryResult.unknown(
                f"{exc.message}; asking {title} by our id failed too ({second.message}), "
                f"so it is not sent again by itself (`helpgate outbox retry {message.id}` "
                "sends it)")
        if sent:
            return DeliveryResult.ok()
        # Not there (yet): the next attempt asks again before it sends.
        return DeliveryResult.retry(f"{exc.message}; {title} has no message by our id "
                                    f"{message.id}, asked again before the next attempt")

    async def close(self) -> None:
        await self.gateway.close()
