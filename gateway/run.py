"""`helpgate run`: assembly of the configured parts on one event loop.

Today the gateway runs the status timers on the embedded default (SQLite); the email
transport and messenger channels plug into `serve` as their issues land. SIGTERM and
SIGINT stop it between two units of work, never in the middle of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import datetime, timezone

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.timers import run_due_timers
from helpgate.ticketstore.repository import Store

log = logging.getLogger("helpgate.run")


async def serve(config: Config, store: Store, timer_interval: float = 30.0) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    recovered = await Pipeline(config, store).process_received()
    if recovered:
        log.warning("decided %d messages kept but left undecided by an earlier stop",
                    len(recovered))
    print(f"helpgate running: database {store.url.split('@')[-1]}; no channels configured "
          "yet; status timers every "
          f"{timer_interval:g}s. Stop with Ctrl-C.", flush=True)
    while not stop.is_set():
        moved = await store.run(run_due_timers, config, datetime.now(timezone.utc))
        if moved:
            log.info("timers moved %d tickets", moved)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=timer_interval)
    print("helpgate stopped", flush=True)
