"""Telegram as a channel: the kind the registry knows (gateway/channels.py).

Its raw record is a JSON envelope of the update and its files (parse.py); its adapter is
the bot, polling or behind a webhook, when `[telegram] token` is set.
"""

from __future__ import annotations

from helpgate.channels.base import Adapter, ChannelKind, Finding, Services
from helpgate.channels.telegram.parse import parse
from helpgate.config.schema import Config


def adapters(config: Config, services: Services) -> list[Adapter]:
    if not config.telegram.token:
        return []
    # Imported only when used: the client library costs seconds to import.
    from helpgate.channels.telegram.adapter import TelegramAdapter
    return [TelegramAdapter(config.telegram, services, config.mail.max_message_size,
                            texts=lambda words: config.text(config.customer_language(words)),
                            greeting=lambda code: config.text(_language(config, code)))]


def _language(config: Config, language_code: str) -> str:
    """A customer who has written nothing yet: the configured language, else theirs as
    Telegram knows it (Russian or English), else the fallback."""
    if config.language != "auto":
        return config.language
    code = language_code.lower()
    return "ru" if code.startswith("ru") else "en" if code.startswith("en") \
        else config.fallback_language


async def check(config: Config) -> list[Finding]:
    from helpgate.channels.telegram.check import check as run
    return await run(config)


TELEGRAM = ChannelKind(name="telegram", parse=parse, adapters=adapters, check=check)
