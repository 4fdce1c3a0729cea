"""A property-based run over the staff API's own OpenAPI document (schemathesis): for
every operation, generated requests — valid and not — must never get a 5xx, and every
answer must be one the document declares (status, content type, body schema). This is
what keeps /openapi.json accurate, and "bad input is a 4xx with a JSON message" true for
inputs nobody thought of.

The server runs on a free loopback port in a thread of its own (schemathesis calls it
synchronously), on SQLite with a few tickets, the rate limit off, and an administrator's
token (so directory changes are tried too, not only refused).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis import checks

from helpgate.config.schema import Config
from helpgate.gateway.api import Api, openapi, routes
from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore import api_tokens, people
from helpgate.ticketstore.repository import Store
from tests.gateway.cli_helpers import DIRECTORY
from tests.mailfactory import mail

CONFIG = Config.model_validate({"api": {"rate_limit": 0}})
schema = schemathesis.openapi.from_dict(openapi(routes(CONFIG), CONFIG))


class Served:
    """The API on a loop in a background thread; `url` and a valid token."""

    def __init__(self, path) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""
        self.token = ""

    def __enter__(self) -> Served:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        self.store = Store(f"sqlite:///{self.path / 'helpgate.db'}")
        await self.store.ensure_schema()
        now = datetime.now(timezone.utc)
        await self.store.run(people.import_directory,
                             people.DirectoryFile.model_validate(DIRECTORY), now)
        pipeline = Pipeline(CONFIG, self.store)
        for subject in ("Принтер", "Счёт", "Доступ"):
            await pipeline.ingest_email(mail(subject=subject))
        self.token = (await self.store.run(api_tokens.issue, "anna@helpgate.test", "prop",
                                           now))["token"]
        self.runner = web.AppRunner(Api(CONFIG, self.store).app())
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.store.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    with Served(tmp_path_factory.mktemp("api")) as server:
        yield server


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail(case, served):
    # Left out: "a schema-valid request is accepted". Valid by the document is not
    # always possible here: a history needs email or phone (OpenAPI 3.0 cannot say "at
    # least one"), `until` must lie in the future, a status depends on the ticket's.
    # Those refusals are 4xx with a message, tested one by one in test_api.py.
    case.call_and_validate(base_url=served.url,
                           excluded_checks=[checks.positive_data_acceptance],
                           headers={"Authorization": f"Bearer {served.token}"})
