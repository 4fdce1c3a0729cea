"""docker-compose.yml is checked by parsing (no Docker engine here), #15.14: the gateway
runs `helpgate run` against the PostgreSQL service; every file it references is in the
repository; every ${VARIABLE} resolves from .env.example, the one file an admin edits; a
password with any character survives (it never goes into a URL); the health check asks
the SMTP endpoint itself; and the image gets the package, not .git, .venv or secrets."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url

from helpgate.config.load import load_config
from helpgate.ticketstore.repository import normalize_url
from tests.mailservers import free_port

ROOT = Path(__file__).resolve().parents[1]
# Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(value, env: dict[str, str]):
    """The compose file as Docker Compose would see it with `env` as .env."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name, operator, argument = match.groups()
        present = name in env and (env[name] != "" or operator not in (":-", ":?"))
        if present:
            return env[name]
        if operator in (":-", "-"):
            return argument
        raise AssertionError(f"${{{name}}} is not set: {argument or 'no default'}")
    return VARIABLE.sub(one, value)


def strings(value):
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return [value] if isinstance(value, str) else []


def test_services_volumes_and_referenced_files():
    data = compose()
    services = data["services"]
    assert set(services) == {"db", "gateway"}
    gateway = services["gateway"]
    assert gateway["depends_on"]["db"]["condition"] == "service_healthy"
    build = gateway["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                # A missing bind source makes Docker create a directory in its place.
                assert (ROOT / source).is_file(), f"{source} is not in the repository"
            else:
                assert source in data["volumes"], f"named volume {source} is not declared"


def test_every_variable_resolves_from_env_example():
    env = env_example()
    resolved = interpolate(compose(), env)
    assert resolved["services"]["db"]["environment"]["POSTGRES_PASSWORD"] == \
        env["POSTGRES_PASSWORD"]
    # Every ${VAR} the config reads is passed to the gateway's environment.
    config = tomllib.loads((ROOT / "deploy" / "helpgate.toml").read_text(encoding="utf-8"))
    needed = {m.group(1) for value in strings(config) for m in VARIABLE.finditer(value)}
    assert needed <= set(resolved["services"]["gateway"]["environment"])
    assert needed <= set(env)
    # Without POSTGRES_PASSWORD compose stops with a message saying where to set it.
    with pytest.raises(AssertionError, match=r"set POSTGRES_PASSWORD in \.env"):
        interpolate(compose(), {**env, "POSTGRES_PASSWORD": ""})


def test_any_password_reaches_the_database_driver_unmangled():
    password = "p@ss:w/rd#?%"
    gateway = interpolate(compose(), {**env_example(), "POSTGRES_PASSWORD": password})[
        "services"]["gateway"]["environment"]
    url = make_url(normalize_url(gateway["HELPGATE_DATABASE_URL"]))
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "db", 5432, "helpgate", "helpgate", None)
    assert gateway["PGPASSWORD"] == password
    # No password from the URL: asyncpg then takes PGPASSWORD from the environment.
    _, options = asyncpg_dialect().create_connect_args(url)
    assert "password" not in options


def test_the_deployed_config_loads_and_listens_where_the_port_is_published(monkeypatch):
    gateway = interpolate(compose(), env_example())["services"]["gateway"]
    for name, value in gateway["environment"].items():
        monkeypatch.setenv(name, str(value))
    mounted = {volume.split(":")[1]: volume.split(":")[0] for volume in gateway["volumes"]}
    config = load_config(ROOT / mounted[gateway["environment"]["HELPGATE_CONFIG"]])
    assert config.database.url.startswith("postgresql://helpgate@db")
    assert config.mail.endpoint.host == "0.0.0.0"
    [published] = gateway["ports"]
    assert published.rpartition(":")[2] == str(config.mail.endpoint.port)


async def test_the_health_check_asks_the_smtp_endpoint(relay):
    """The check's own command, run against a real SMTP server and against nothing."""
    check = compose()["services"]["gateway"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    code = check[3]
    deployed = tomllib.loads((ROOT / "deploy" / "helpgate.toml").read_text(encoding="utf-8"))
    port = deployed["mail"]["endpoint"]["port"]
    assert f"'127.0.0.1', {port}" in code

    async def run(target: int) -> int:
        command = [sys.executable, "-c", code.replace(f"'127.0.0.1', {port}",
                                                      f"'127.0.0.1', {target}")]
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True,
                                       timeout=60)
        return done.returncode
    assert await run(relay.port) == 0
    assert await run(free_port()) != 0


def test_the_image_gets_every_package_and_nothing_private():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".env", "*.db"} <= ignored
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, flags=re.M))
    folders = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"].values())
    assert folders <= copied, f"not copied into the image: {folders - copied}"
    assert not copied & ignored
    assert re.search(r'^CMD \["run"\]', dockerfile, flags=re.M)
