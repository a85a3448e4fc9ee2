"""Report mail through a real SMTP server (aiosmtpd on 127.0.0.1, STARTTLS with a self-signed certificate
made by openssl, AUTH required): what arrives, what a refusing, silent or credential-demanding server does
to the outbox, resending, and header injection."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from agent.config.load import load_config

from agent.config.schema import schema_model
from agent.plugin.mailer import MailError, SmtpSection, build_message, send_message
from agent.config.reports import report_issues, report_schedule
from agent.reports.delivery import MAX_ATTEMPTS, deliver_pending, queue_report, resend, retry_delay
from agent.store.writer import connect
from agent.config.yamlsrc import ConfigError
from tests.agent.test_report import END, make_seeded
from tests.conftest import free_port, run_cli

USER, PASSWORD = "maint", "s3cret-Pass-42"
NOW = END + 3600


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (subjectAltName IP), made by openssl."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class Inbox:
    """The aiosmtpd handler: records what it received; `refuse` answers every RCPT with 550."""

    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    refuse: bool = False

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"

    def message(self, index: int = -1) -> email.message.EmailMessage:
        return email.message_from_bytes(self.received[index][2], policy=email.policy.default)


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == \
        (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


@dataclass
class MailServer:
    port: int
    inbox: Inbox
    cert: Path


@pytest.fixture
def smtp_server(certificate):
    """STARTTLS required before AUTH, AUTH required before MAIL: like a submission port."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, auth_required=True, authenticator=_authenticate)
    controller.start()
    yield MailServer(controller.port, inbox, cert)
    controller.stop()


@pytest.fixture
def smtps_server(certificate):
    """Implicit TLS from the first byte (port 465 style), AUTH required (aiosmtpd cannot tell that the
    connection is TLS already, hence auth_require_tls off)."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), ssl_context=context,
                            auth_required=True, auth_require_tls=False, authenticator=_authenticate)
    controller.start()
    yield MailServer(controller.port, inbox, cert)
    controller.stop()


def smtp_yaml(server: MailServer, tmp_path: Path, *, credentials: bool = True, password: str = PASSWORD,
              timeout: str = "5s", port: int | None = None) -> str:
    secret = tmp_path / "smtp.pass"
    secret.write_text(password + "\n")
    auth = f", username: {USER}, password: '${{file:{secret}}}'" if credentials else ""
    return (f'{{host: 127.0.0.1, port: {port or server.port}, security: starttls, ca_file: {server.cert}, '
            f'timeout: {timeout}, sender: "maint-agent <maint@example.com>"{auth}}}')


def outbox_row(loaded, outbox_id: int) -> dict:
    conn = connect(loaded.db_path)
    columns = ("status", "attempts", "next_attempt", "last_error", "sent_at", "recipients", "message")
    row = conn.execute(f"SELECT {', '.join(columns)} FROM report_outbox WHERE id = ?", (outbox_id,)).fetchone()
    conn.close()
    return dict(zip(columns, row))


def test_mailer_weekly_report_arrives_over_starttls_with_auth(smtp_server, tmp_path, write_config):
    loaded, store = make_seeded(tmp_path, write_config, smtp_yaml(smtp_server, tmp_path))
    section = loaded.config.reports[0]
    outbox_id = queue_report(loaded.db_path, loaded, section, NOW)
    assert queue_report(loaded.db_path, loaded, section, NOW + 60) == outbox_id, "one period is queued once"
    assert deliver_pending(loaded.db_path, loaded, NOW) == {"sent": 1, "retrying": 0, "failed": 0}

    [(mail_from, rcpt_tos, _)] = smtp_server.inbox.received
    assert mail_from == "maint@example.com" and rcpt_tos == ["ops@example.com", "duty@example.com"]
    message = smtp_server.inbox.message()
    assert message["Subject"] == "[maint-agent] web-1 week report 2026-W10: critical"
    assert message["To"] == "ops@example.com, Duty Manager <duty@example.com>"
    assert message["From"] == "maint-agent <maint@example.com>" and message["Message-ID"]
    assert message.get_content_type() == "multipart/mixed"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "99.206%" in text and "43 days" in text and "99.206%" in html and "43 days" in html
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "maint-agent-web-1-weekly-2026-W10.csv"
    assert "availability,1,web,ratio,0.992063" in attachment.get_content()

    row = outbox_row(loaded, outbox_id)
    assert (row["status"], row["attempts"], row["sent_at"], row["last_error"]) == ("sent", 1, NOW, None)
    assert PASSWORD.encode() not in row["message"]
    logged = store.conn.execute("SELECT message FROM maintenance_log WHERE category = 'report'").fetchall()
    assert logged and "delivered to ops@example.com" in logged[-1][0]
    store.close()


def test_mailer_refusing_server_retries_with_backoff_then_keeps_report_failed_and_resend_works(
        smtp_server, tmp_path, write_config):
    loaded, store = make_seeded(tmp_path, write_config, smtp_yaml(smtp_server, tmp_path))
    smtp_server.inbox.refuse = True
    outbox_id = queue_report(loaded.db_path, loaded, loaded.config.reports[0], NOW)
    now, delays = NOW, []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        counts = deliver_pending(loaded.db_path, loaded, now)
        row = outbox_row(loaded, outbox_id)
        assert row["attempts"] == attempt and "550 5.1.1 mailbox unavailable" in row["last_error"]
        if attempt < MAX_ATTEMPTS:
            assert counts["retrying"] == 1 and row["status"] == "pending"
            assert deliver_pending(loaded.db_path, loaded, row["next_attempt"] - 1)["retrying"] == 0, "not yet due"
            delays.append(row["next_attempt"] - now)
            now = row["next_attempt"]
    assert delays == [retry_delay(n) for n in range(1, MAX_ATTEMPTS)]
    assert delays[:4] == [60, 120, 240, 480] and delays[-1] == 3600
    assert counts["failed"] == 1 and row["status"] == "failed"
    assert deliver_pending(loaded.db_path, loaded, now + 10 * 86400) == {"sent": 0, "retrying": 0, "failed": 0}
    assert "refused every recipient" in row["last_error"] and not smtp_server.inbox.received
    logged = store.conn.execute("SELECT message FROM maintenance_log WHERE category = 'report'").fetchone()[0]
    assert f"resend {outbox_id}" in logged

    smtp_server.inbox.refuse = False        # the mail admin fixed the mailbox
    assert resend(loaded.db_path, outbox_id, now)
    assert deliver_pending(loaded.db_path, loaded, now)["sent"] == 1
    assert outbox_row(loaded, outbox_id)["status"] == "sent" and len(smtp_server.inbox.received) == 1
    store.close()


def test_mailer_silent_server_times_out_with_clear_error(tmp_path, write_config, smtp_server):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)                        # the kernel completes connects; nobody ever says 220
    try:
        smtp = smtp_yaml(smtp_server, tmp_path, timeout="500ms", port=silent.getsockname()[1])
        loaded, store = make_seeded(tmp_path, write_config, smtp)
        outbox_id = queue_report(loaded.db_path, loaded, loaded.config.reports[0], NOW)
        began = time.monotonic()
        assert deliver_pending(loaded.db_path, loaded, NOW)["retrying"] == 1
        assert time.monotonic() - began < 5
        row = outbox_row(loaded, outbox_id)
        assert row["status"] == "pending" and "did not answer within 0.5s (timeout)" in row["last_error"]
        store.close()
    finally:
        silent.close()


def test_mailer_server_requiring_auth_the_config_lacks_keeps_report_until_fixed(
        smtp_server, tmp_path, write_config):
    loaded, store = make_seeded(tmp_path, write_config, smtp_yaml(smtp_server, tmp_path, credentials=False))
    outbox_id = queue_report(loaded.db_path, loaded, loaded.config.reports[0], NOW)
    assert deliver_pending(loaded.db_path, loaded, NOW)["retrying"] == 1
    row = outbox_row(loaded, outbox_id)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert "530" in row["last_error"] and \
        "requires authentication, but smtp.username/password are not configured" in row["last_error"]
    fixed = load_config(write_config(loaded.path.read_text().replace(
        "timeout: 5s", f"timeout: 5s, username: {USER}, password: '${{file:{tmp_path / 'smtp.pass'}}}'")))
    assert fixed.config.smtp.username == USER
    assert resend(fixed.db_path, outbox_id, NOW + 5)
    assert deliver_pending(fixed.db_path, fixed, NOW + 5)["sent"] == 1
    assert smtp_server.inbox.message()["Subject"].startswith("[maint-agent] web-1")
    store.close()


def test_mailer_wrong_password_is_named_without_the_password(smtp_server, tmp_path):
    secret = tmp_path / "wrong.pass"
    secret.write_text("not-the-password")
    smtp = SmtpSection(host="127.0.0.1", port=smtp_server.port, ca_file=str(smtp_server.cert), timeout=5,
                       sender="maint@example.com", username=USER, password=f"${{file:{secret}}}")
    with pytest.raises(MailError) as caught:
        send_message(smtp, ["ops@example.com"], "s", "t")
    assert "rejected the login of user 'maint'" in str(caught.value) and "not-the-password" not in str(caught.value)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_mailer_implicit_tls_verifies_the_certificate_then_logs_in(smtps_server):
    smtp = SmtpSection(host="127.0.0.1", port=smtps_server.port, security="tls", timeout=5,
                       sender="maint@example.com")
    with pytest.raises(MailError, match="TLS with 127.0.0.1:.* failed: CERTIFICATE_VERIFY_FAILED"):
        send_message(smtp, ["ops@example.com"], "s", "t")
    trusted = SmtpSection(**{**smtp.model_dump(), "ca_file": str(smtps_server.cert), "username": USER,
                             "password": PASSWORD})
    send_message(trusted, ["ops@example.com"], "implicit TLS", "body")
    assert smtps_server.inbox.message()["Subject"] == "implicit TLS"


def test_mailer_refused_connection_is_named(tmp_path, closed_port):
    smtp = SmtpSection(host="127.0.0.1", port=closed_port, timeout=5, sender="maint@example.com")
    with pytest.raises(MailError, match=f"cannot connect to 127.0.0.1:{closed_port}: connection refused"):
        send_message(smtp, ["ops@example.com"], "s", "t")


def test_mailer_header_injection_in_subject_is_neutralised(smtp_server, tmp_path):
    smtp = SmtpSection(host="127.0.0.1", port=smtp_server.port, ca_file=str(smtp_server.cert), timeout=5,
                       sender="maint@example.com", username=USER, password=PASSWORD)
    send_message(smtp, ["ops@example.com"], "x\nBcc: evil@example.com\r\nX-Injected: 1", "body")
    [(_, rcpt_tos, raw)] = smtp_server.inbox.received
    message = smtp_server.inbox.message()
    assert rcpt_tos == ["ops@example.com"]
    assert message["Bcc"] is None and message["X-Injected"] is None and b"\nBcc:" not in raw
    assert message["Subject"] == "x Bcc: evil@example.com X-Injected: 1"


@pytest.mark.parametrize("recipient", ["ops@example.com\r\nBcc: evil@example.com", "ops@example.com\nevil@x.org",
                                       "Ops\r\nBcc: evil@example.com <ops@example.com>", "two@a.org, three@b.org"])
def test_mailer_recipient_with_line_break_or_list_is_refused(recipient):
    with pytest.raises(MailError, match="invalid email address"):
        build_message("maint@example.com", [recipient], "s", "t")


@pytest.mark.parametrize("key, value, message", [
    ("subject", '"x\\nBcc: evil@example.com"', "line breaks are not allowed"),
    ("subject", '"{host} {password}"', "unknown placeholder {password}"),
    ("subject", '"{host.__class__}"', "unknown placeholder"),
    ("recipients", '["ops@example.com\\r\\nBcc: evil@example.com"]', "invalid email address"),
    ("schedule", '"Every Week"', "not a schedule name nor a calendar spec"),
])
def test_mailer_config_rejects_injection_and_unknown_placeholders(write_config, key, value, message):
    reports = {"name": "weekly", "period": "week", "recipients": '["ops@example.com"]'}
    reports[key] = value
    body = ", ".join(f"{k}: {v}" for k, v in reports.items())
    path = write_config(f"""
        smtp: {{host: 127.0.0.1, sender: maint@example.com}}
        reports:
          - {{{body}}}
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(str(issue) for issue in caught.value.issues)
    assert message in text and f"agent.yaml:3: reports[0]" in text


def test_mailer_cli_send_outbox_and_resend(smtp_server, tmp_path, write_config):
    loaded, store = make_seeded(tmp_path, write_config, smtp_yaml(smtp_server, tmp_path))
    store.close()
    smtp_server.inbox.refuse = True
    done = run_cli("report", "--send", "--from", "2026-03-02", config=loaded.path)
    assert done.returncode == 1 and "550" in done.stderr and "report resend 1" in done.stderr
    done = run_cli("report", "outbox", "--format", "json", config=loaded.path)
    [row] = json.loads(done.stdout)
    assert (row["id"], row["status"], row["attempts"], row["recipients"]) == \
        (1, "pending", 1, ["ops@example.com", "Duty Manager <duty@example.com>"])
    smtp_server.inbox.refuse = False
    done = run_cli("report", "resend", "1", config=loaded.path)
    assert done.returncode == 0, done.stderr
    assert "report 1 sent to ops@example.com" in done.stdout
    assert "99.206%" in smtp_server.inbox.message().get_body(("plain",)).get_content()
    done = run_cli("report", "outbox", config=loaded.path)
    assert done.returncode == 0 and " sent " in done.stdout
    assert run_cli("report", "resend", "99", config=loaded.path).returncode == 2


def test_mailer_report_issues_name_unknown_schedules_duplicates_and_missing_smtp():
    config = schema_model().model_validate({"schedules": {"biweekly": "mon 06:00"}, "reports": [
        {"name": "weekly", "period": "week", "recipients": ["ops@example.com"], "schedule": "biweekly"},
        {"name": "weekly", "period": "month", "recipients": ["ops@example.com"], "schedule": "biweeky"},
        {"name": "daily", "period": "day", "recipients": ["ops@example.com"], "schedule": "07:30"}]})
    assert report_issues(config.reports, config.schedules, config.smtp is not None) == [
        (("reports", 1, "name"), "duplicate report name 'weekly'"),
        (("reports", 1, "schedule"), "no schedule named 'biweeky' in schedules: (daily, weekly, monthly, quarterly, "
                                     "biweekly) (did you mean 'biweekly'?)"),
        (("reports",), "reports are emailed: add an smtp: section")]
    assert report_schedule(config.reports[2], config.schedules).time_text == "07:30"
    assert report_schedule(config.reports[0], config.schedules).text == "mon 06:00"
