"""The daemon sends scheduled reports: a weekly report whose slot passed while the agent was down is caught
up at start, rendered, queued and delivered to a real SMTP server (aiosmtpd), and the CLI's figures match."""

from __future__ import annotations

import email
import email.policy
import json
import sqlite3
import time

from aiosmtpd.controller import Controller

from tests.conftest import free_port, wait_for


class Inbox:
    def __init__(self):
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append((list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 OK"


def test_a_missed_weekly_report_is_caught_up_and_delivered(agent_factory):
    from agent.store.writer import Store

    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        agent = agent_factory(f"""
            agent:
              state_dir: {{state}}
              hostname: cam-01
            http:
              listen: 127.0.0.1:{{port}}
            smtp:
              host: 127.0.0.1
              port: {smtp.port}
              security: none
              sender: maint-agent@cam-01.example
            reports:
              - name: weekly
                period: week
                schedule: mon 07:00
                recipients: [ops@example.com]
                attach_csv: true
            checks:
              - {{name: load, type: load, every: 1h}}
            """)
        store = Store(agent.config.parent / "var" / "maint-agent.db")
        store.mark_fired("_report:weekly", time.time() - 8 * 86400)   # the agent was down at the last slot
        store.close()
        agent.start()

        wait_for(lambda: inbox.messages, timeout=30, what="the weekly report in the mailbox")
        recipients, raw = inbox.messages[0]
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert recipients == ["ops@example.com"]
        assert "cam-01" in message["Subject"] and "week" in message["Subject"]
        parts = {part.get_content_type() for part in message.walk()}
        assert {"text/plain", "text/html", "text/csv"} <= parts

        db = sqlite3.connect(agent.config.parent / "var" / "maint-agent.db")
        status = db.execute("SELECT status, attempts FROM report_outbox WHERE report = 'weekly'").fetchall()
        db.close()
        assert status == [("sent", 1)]

        outbox = agent.cli("report", "outbox", "--format", "json")
        assert outbox.returncode == 0, outbox.stderr
        assert [row["status"] for row in json.loads(outbox.stdout)] == ["sent"]
    finally:
        smtp.stop()
