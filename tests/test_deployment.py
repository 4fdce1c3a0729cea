"""docker-compose.yml is checked by parsing (no Docker engine here): the gateway service
runs `helpgate run` against the PostgreSQL service, secrets come from the environment."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_wires_gateway_to_postgres():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"db", "gateway"}
    gateway = services["gateway"]
    assert gateway["depends_on"]["db"]["condition"] == "service_healthy"
    assert 'CMD ["run"]' in gateway["build"]["dockerfile_inline"]
    url = gateway["environment"]["HELPGATE_DATABASE_URL"]
    assert url.startswith("postgresql://") and "${POSTGRES_PASSWORD}" in url
    assert "healthcheck" in gateway and "healthcheck" in services["db"]
    assert "pgdata" in compose["volumes"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    # The SMTP/LMTP endpoint is published for the mail server in front of it.
    assert "2525:2525" in gateway["ports"]
    assert gateway["environment"]["SMTP_PASSWORD"].startswith("${SMTP_PASSWORD")
