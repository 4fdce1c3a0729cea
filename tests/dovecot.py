"""A real Dovecot IMAP server for tests (Debian package dovecot-imapd), in a temp folder.

Each fixture instance has its own config, passwd-file user and Maildir, listens on
loopback ports (plain/STARTTLS and implicit TLS) and can be stopped and started again
under a running gateway. Tests put mail in with the standard library's IMAP client, as
any mail server delivering to the mailbox would make it appear.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import need_service
from tests.mailservers import Certificate, free_ports

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "support", "secret"

CONFIG = """
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
shutdown_clients = yes
auth_mechanisms = {mechanisms}
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {base}/users
}}
{oauth}userdb {{
  driver = passwd-file
  args = username_format=%u {base}/users
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
protocol imap {{
  imap_idle_notify_interval = {notify} secs
}}
"""


# Dovecot's oauth2 passdb: a token is good when the fake provider's token-info endpoint
# (tests/fakes/oauth.py) answers 200 with the user in `email`. Asked at every sign-in,
# never cached, as a provider's own IMAP server does.
OAUTH_PASSDB = """
# A refused token must not slow the next sign-in from the same address by up to 15 s
# (anvil's auth penalty), which tests of refusals would otherwise wait out.
login_trusted_networks = 127.0.0.0/8
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {base}/oauth2.conf.ext
}}
"""
OAUTH_ARGS = """tokeninfo_url = {tokeninfo}
username_attribute = email
"""


class Dovecot:
    def __init__(self, certificate: Certificate, idle_notify_interval: int = 1,
                 oauth_tokeninfo: str | None = None) -> None:
        # oauth_tokeninfo: the fake provider's token-info URL (FakeOAuth.tokeninfo_url);
        # with it, the user may also sign in with AUTHENTICATE XOAUTH2.
        # The interval of the server's "still here" keepalive to an IDLE client, which
        # also makes a client look for new mail: short in tests, minutes in production.
        if not os.path.exists(DOVECOT):
            need_service("Dovecot is not installed (Debian package dovecot-imapd)")
        # Dovecot's processes run as other users: the folder must be reachable by them,
        # which a pytest tmp_path (mode 0700 parents) is not.
        self.base = Path(tempfile.mkdtemp(prefix="helpgate-dovecot-"))
        self.base.chmod(0o755)
        user = pwd.getpwnam("nobody")
        self.uid, self.gid = user.pw_uid, user.pw_gid
        home = self.base / "home" / USER
        home.mkdir(parents=True)
        for folder in (self.base / "home", home):
            os.chown(folder, self.uid, self.gid)
        (self.base / "users").write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}:{self.uid}:{self.gid}::{home}\n", encoding="utf-8")
        self.certificate = certificate
        self.port, self.tls_port = free_ports(2)
        self.config = self.base / "dovecot.conf"
        oauth = ""
        if oauth_tokeninfo:
            (self.base / "oauth2.conf.ext").write_text(
                OAUTH_ARGS.format(tokeninfo=oauth_tokeninfo), encoding="utf-8")
            oauth = OAUTH_PASSDB.format(base=self.base)
        self.config.write_text(CONFIG.format(
            base=self.base, cert=certificate.cert, key=certificate.key, uid=self.uid,
            gid=self.gid, port=self.port, tls_port=self.tls_port, notify=idle_notify_interval,
            mechanisms="plain login xoauth2 oauthbearer" if oauth else "plain login",
            oauth=oauth), encoding="utf-8")

    def start(self) -> Dovecot:
        # Output to a file, not a pipe: the daemon keeps its inherited descriptors open.
        with open(self.base / "start.log", "w") as output:
            result = subprocess.run([DOVECOT, "-c", str(self.config)], stdout=output,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError("dovecot did not start: "
                               f"{(self.base / 'start.log').read_text()}{self.log()}")
        deadline = time.monotonic() + 10
        while True:
            try:
                with imaplib.IMAP4("127.0.0.1", self.port, timeout=2) as client:
                    client.noop()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot is not answering: {self.log()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and drop its client connections, as a restart does."""
        pid_file = self.base / "run" / "master.pid"
        if not pid_file.exists():
            return
        # The master leaves running imap sessions alone when it stops: end them first.
        subprocess.run(["doveadm", "-c", str(self.config), "kick", USER],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL)
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        pid_file.unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Gone for good: the whole process group at once (a clean stop takes seconds)."""
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def kill(self) -> None:
        pid_file = self.base / "run" / "master.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
            pid_file.unlink(missing_ok=True)

    def log(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # ------------------------------------------------------------- the test's client
    def client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def deliver(self, *raws: bytes, folder: str = "INBOX") -> None:
        """Put mail into the mailbox, as the mail server delivering to it would."""
        with self.client() as client:
            for raw in raws:
                status, _ = client.append(folder, "", imaplib.Time2Internaldate(time.time()),
                                          raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
                assert status == "OK"

    def flags(self, folder: str = "INBOX") -> dict[int, str]:
        """UID -> FLAGS of every message in a folder."""
        with self.client() as client:
            client.select(folder)
            status, data = client.uid("FETCH", "1:*", "(FLAGS)")
            found = {}
            for line in data:
                # An unsolicited FETCH (another session's flag change) carries no UID.
                if not isinstance(line, bytes) or b"UID " not in line:
                    continue
                text = line.decode()
                uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
                found[uid] = text.split("FLAGS (")[1].split(")")[0]
            return found

    def count(self, folder: str = "INBOX") -> int:
        with self.client() as client:
            status, data = client.select(folder)
            return int(data[0])

    def create(self, folder: str) -> None:
        with self.client() as client:
            client.create(folder)

    def recreate_inbox_with_new_uidvalidity(self) -> None:
        """What a restored backup or a migrated server does: same mail, new UIDVALIDITY."""
        self.kill()
        maildir = self.base / "home" / USER / "Maildir"
        for name in ("dovecot-uidlist", "dovecot.index", "dovecot.index.log",
                     "dovecot.index.cache"):
            (maildir / name).unlink(missing_ok=True)
        self.start()

    def kick(self) -> None:
        """End the user's sessions, as a provider does with BYE when their token expires."""
        subprocess.run(["doveadm", "-c", str(self.config), "kick", USER],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, check=False)

    def oauth_config(self, oauth2: dict, **extra) -> dict:
        """A [[mail.imap]] table signing in with XOAUTH2 (no password)."""
        config = self.imap_config(**extra)
        del config["password"]
        return {**config, "auth": "oauth2", "oauth2": oauth2}

    def imap_config(self, security: str = "none", **extra) -> dict:
        """A [[mail.imap]] table pointing helpgate at this server."""
        port = {"none": self.port, "starttls": self.port, "tls": self.tls_port}[security]
        return {"host": "127.0.0.1" if security == "none" else "localhost", "port": port,
                "security": security, "username": USER, "password": PASSWORD,
                "ca_file": str(self.certificate.cert), "poll_interval": 0.5, "timeout": 3.0,
                **extra}
