"""Telegram as a channel: the kind the registry knows (gateway/channels.py).

Its raw record is a JSON envelope of the update and its files (parse.py); its adapter is
the bot, polling or behind a webhook, when `[telegram] token` is set.
"""

from __future__ import annotations

from helpgate.channels.base import Adapter, ChannelKind, Services
from helpgate.channels.telegram.adapter import TelegramAdapter
from helpgate.channels.telegram.check import check
from helpgate.channels.telegram.parse import parse
from helpgate.config.schema import Config


def adapters(config: Config, services: Services) -> list[Adapter]:
    if not config.telegram.token:
        return []
    return [TelegramAdapter(config.telegram, services, config.mail.max_message_size,
                            texts=lambda words: config.text(config.customer_language(words)))]


TELEGRAM = ChannelKind(name="telegram", parse=parse, adapters=adapters, check=check)
