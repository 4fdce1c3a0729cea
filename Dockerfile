# The helpgate gateway image, built by docker-compose.yml (`docker compose up -d`).
# Only what the package needs is copied in (see .dockerignore: no .git, .venv, databases
# or secrets); the gateway runs as an unprivileged user.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY channels ./channels
COPY config ./config
COPY gateway ./gateway
COPY outbound ./outbound
COPY threading ./threading
COPY ticketstore ./ticketstore
RUN pip install --no-cache-dir /app \
    && useradd --system --create-home --home-dir /var/lib/helpgate helpgate

USER helpgate
WORKDIR /var/lib/helpgate
# The SMTP/LMTP endpoint ([mail.endpoint] in deploy/helpgate.toml).
EXPOSE 2525
ENTRYPOINT ["helpgate"]
CMD ["run"]
