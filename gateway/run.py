"""`helpgate run`: every configured part on one event loop.

The parts: the inbound channels (the SMTP/LMTP endpoint, the IMAP mailboxes), the outbox
worker with a transport per configured outbound channel, and the status timers. With no
config at all this is the embedded default: SQLite in ./helpgate.db and the SMTP endpoint
on 127.0.0.1:2525, so a new user can send a mail with any client and see a ticket.

SIGTERM and SIGINT drain: channels stop taking messages and finish storing the ones in
flight, the outbox worker finishes the round it is sending, and only then does the
process exit — no message is left half-processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from helpgate.channels.base import Adapter, ChannelStartError, InboundMessage, Services
from helpgate.config.schema import Config
from helpgate.gateway.bulk import ParserPool
from helpgate.gateway.channels import CHANNELS, transports
from helpgate.gateway.oauth import TokenBroker, configured_grants
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.timers import run_due_timers
from helpgate.outbound.alerts import grant_needs_login
from helpgate.outbound.outbox import OutboxWorker
from helpgate.ticketstore.oauth import SecretKeyError
from helpgate.ticketstore.repository import Store, StoreCursors

log = logging.getLogger("helpgate.run")
# How often the running gateway looks for messages kept but left undecided, and how old
# such a message must be: a message being decided right now is younger than that.
UNDECIDED_SWEEP = 3.0
UNDECIDED_AGE = timedelta(seconds=3)
# A fetch of this many mails or more parses in a worker process (started on first need).
POOL_FROM = 8


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Gateway:
    """The assembled parts; `serve()` runs them until `stop` is set."""

    def __init__(self, config: Config, store: Store, timer_interval: float = 30.0,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.store = store
        self.timer_interval = timer_interval
        self.clock = clock
        self.pipeline = Pipeline(config, store, clock)
        self.worker = OutboxWorker(store, config, transports(config), clock)
        self.pipeline.on_commit.append(self.worker.wake)
        self.tokens = oauth_broker(config, store, clock)
        for transport in self.worker.transports.values():
            if self.tokens is not None and hasattr(transport, "use_tokens"):
                transport.use_tokens(self.tokens)
        self.services = Services(ingest=self.pipeline.ingest_many, parse_many=self.parse_many,
                                 cursors=StoreCursors(store, clock), clock=clock,
                                 tokens=self.tokens)
        self.channels: list[Adapter] = [adapter for entry in CHANNELS.values()
                                        for adapter in entry.kind.adapters(config, self.services)]
        self.api = api_server(self)
        self._parsers: ParserPool | None = None
        self._parsers_starting: asyncio.Task | None = None
        self.stop = asyncio.Event()

    async def serve(self) -> None:
        recovered = await self.pipeline.process_received()
        if recovered:
            log.warning("decided %d messages kept but left undecided by an earlier stop",
                        len(recovered))
        try:
            for channel in self.channels:
                await channel.start()
            if self.api is not None:
                await self.api.start()
        except BaseException:  # a port in use: close what did start, then say why
            if self.api is not None:
                await self.api.stop()
            for channel in self.channels:
                await channel.stop()
            await self._stop_parsers()
            raise
        tasks = [asyncio.create_task(self.worker.run(self.stop), name="outbox"),
                 asyncio.create_task(self._timers(), name="timers"),
                 asyncio.create_task(self._undecided(), name="undecided")]
        print(self.banner(), flush=True)
        try:
            await self.stop.wait()
        finally:
            # Inbound first: what is stored now still gets its notifications queued.
            if self.api is not None:
                await self.api.stop()
            for channel in self.channels:
                await channel.stop()
            self.stop.set()
            await asyncio.gather(*tasks)
            for transport in self.worker.transports.values():
                await transport.close()
            await self._stop_parsers()
        print("helpgate stopped", flush=True)

    async def parse_many(self, channel: str, raws: list[bytes]) -> list[InboundMessage]:
        """A channel's raw records -> messages. A large batch (an IMAP backlog, a first
        run) parses in worker processes, overlapping the store's work on the previous
        batch; they start at the first large batch, which parses here meanwhile, as does
        a record or two (sooner than a round trip to a worker), and a messenger's records
        (cheap JSON)."""
        kind = CHANNELS[channel].kind
        parse = kind.parse
        if kind.heavy_parse and len(raws) >= POOL_FROM and self.config.mail.parser_workers != 0:
            if self._parsers is not None:
                return await self._parsers.parse(raws, self.clock(),
                                                 self.pipeline.worker_parse(parse))
            if self._parsers_starting is None:
                self._parsers_starting = asyncio.create_task(self._start_parsers())
        now = self.clock()
        return [parse(raw, now) for raw in raws]

    async def _start_parsers(self) -> None:
        try:
            self._parsers = await ParserPool(self.config.mail.parser_workers).__aenter__()
        except Exception:  # no processes to be had: parsing in the gateway works too
            log.exception("parser workers could not start; parsing in the gateway")

    async def _stop_parsers(self) -> None:
        if self._parsers_starting is not None:
            await self._parsers_starting
        if self._parsers is not None:
            await self._parsers.__aexit__(None, None, None)
            self._parsers = None

    def banner(self) -> str:
        inbound = ", ".join(channel.name for channel in self.channels) or "none"
        outbound = ", ".join(self.worker.transports) or "none (notifications wait in the outbox)"
        api = (f"; staff API: http://{self.api.host}:{self.api.port}"
               if self.api is not None else "")
        return (f"helpgate running: database {self.store.url.split('@')[-1]}; inbound: "
                f"{inbound}; outbound: {outbound}{api}. Stop with Ctrl-C.")

    async def _timers(self) -> None:
        while not self.stop.is_set():
            try:
                moved = await self.store.run(run_due_timers, self.config, self.clock())
                if moved:
                    log.info("timers moved %d tickets", moved)
                    self.worker.wake()
            except Exception:  # the database away for a moment: the next round retries
                log.exception("status timers failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=self.timer_interval)

    async def _undecided(self) -> None:
        """Decide, within seconds, what was kept but left undecided (R-TS-5): a decision
        that failed and could not even be quarantined must not wait for a restart; and
        held chat messages once their wait for the customer's answer is over."""
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=UNDECIDED_SWEEP)
            if self.stop.is_set():
                return
            try:
                decided = await self.pipeline.process_received(older_than=UNDECIDED_AGE)
                if decided:
                    log.warning("decided %d messages left undecided", len(decided))
                # Chat messages whose question which ticket went unanswered.
                placed = await self.pipeline.process_held()
                if placed:
                    log.info("placed %d held chat messages nobody chose a ticket for",
                             len(placed))
            except Exception:  # the database away: the next round retries
                log.exception("deciding undecided messages failed")


def api_server(gateway: Gateway):
    """The staff HTTP API (gateway/api.py) when `[api] enabled`: one more part, waking
    the outbox worker after a change that queued a notification."""
    if not gateway.config.api.enabled:
        return None
    from helpgate.gateway.api import Api, ApiServer

    def channels() -> dict:
        return {"inbound": [channel.name for channel in gateway.channels],
                "outbound": list(gateway.worker.transports)}

    api = Api(gateway.config, gateway.store, gateway.clock, on_commit=gateway.worker.wake,
              channels=channels, pipeline=gateway.pipeline)
    return ApiServer(api, gateway.config.api.host, gateway.config.api.port)


def oauth_broker(config: Config, store: Store,
                 clock: Callable[[], datetime]) -> TokenBroker | None:
    """The token broker when a mailbox or the relay signs in with OAuth2. Its key must be
    in the environment: without it no stored grant can be read, so the gateway does not
    start (rather than run with mailboxes that can never sign in)."""
    if not configured_grants(config):
        return None

    def notify(session, name: str, detail: str, now: datetime) -> None:
        grant_needs_login(session, config, name, detail, now)

    try:
        return TokenBroker(store, config, notify=notify, clock=clock)
    except SecretKeyError as exc:
        raise ChannelStartError(str(exc)) from None


async def serve(config: Config, store: Store, timer_interval: float = 30.0) -> None:
    gateway = Gateway(config, store, timer_interval)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gateway.stop.set)
    await gateway.serve()
