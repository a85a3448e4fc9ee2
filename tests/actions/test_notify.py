"""notify: Slack-compatible webhook, PagerDuty Events API v2 and email, against real local receivers.

The operator story (seed 000: P0–P3 and their routes): a problem, an
escalation and the resolution reach each configured channel; PagerDuty folds
them into one incident through a dedup key that stays the same across calls and
is closed by the resolve event; a channel that answers 500 makes the action
fail naming that channel and the status; and the webhook URL's token and the
routing key never appear in what the agent records (summary, output, details),
even when the receiver echoes them back.

The receivers are real: an http.server on 127.0.0.1 in a thread recording each
request, and an aiosmtpd SMTP server receiving the real message.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from actions.base import ActionContext, TriggerInfo
from actions.notify import NotifyAction
from agent.plugin.mailer import SmtpSection
from tests.conftest import free_port, run_cli
from tests.fixtures.webhook import Receiver

TOKEN = "T0001/B0002/xoxSECRETtoken4d2f"
ROUTING_KEY = "R0UT1NGKEY-7a9c41e2b3d5f6a7b8c9"
HOST = "cam-db-1"
PROBLEM = TriggerInfo("beauth-http", "critical", "connection refused on 127.0.0.1:8080", "P1")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def secrets(tmp_path, monkeypatch, receiver):
    """References to the Slack webhook URL (in a file) and routing key (in the environment)."""
    def slack_ref(prefix: str = "/services/") -> str:
        path = tmp_path / f"slack-{len(list(tmp_path.glob('slack-*')))}"
        path.write_text(f"{receiver.url}{prefix}{TOKEN}\n")
        return "${file:" + str(path) + "}"

    monkeypatch.setenv("MAINT_TEST_PD_KEY", ROUTING_KEY)
    return slack_ref, "${env:MAINT_TEST_PD_KEY}"


def make(**options) -> NotifyAction:
    return NotifyAction(NotifyAction.Options.model_validate({"name": "page-ops", "type": "notify", **options}))


def context(trigger: TriggerInfo | None = PROBLEM, **kwargs) -> ActionContext:
    return ActionContext(10, trigger=trigger, hostname=HOST, **kwargs)


def assert_no_secrets(result) -> None:
    shown = result.summary + result.output + json.dumps(result.details)
    assert TOKEN not in shown and "xoxSECRET" not in shown and ROUTING_KEY not in shown


def test_notify_slack_sends_text_with_host_check_status_severity_summary_reason(receiver, secrets):
    slack_ref, _ = secrets
    escalation = TriggerInfo("beauth-http", "critical", "connection refused", "P1", event="escalate",
                             reason="attempts exhausted (3 within 1h)")
    result = make(slack={"url": slack_ref()}).execute(context(escalation))
    assert result.ok, result.summary
    assert result.summary == f"notified slack: [P1] ESCALATION: beauth-http CRITICAL on {HOST}"
    [(path, body)] = receiver.requests
    assert path == f"/services/{TOKEN}" and set(body) == {"text"}
    for part in (HOST, "beauth-http", "critical", "P1", "connection refused", "attempts exhausted"):
        assert part in body["text"]
    assert result.details["channels"] == {"slack": "sent (HTTP 202)"}
    assert_no_secrets(result)


def test_notify_pagerduty_trigger_and_resolve_share_a_stable_dedup_key(receiver, secrets):
    _, key_ref = secrets
    action = make(pagerduty={"routing_key": key_ref, "url": f"{receiver.url}/v2/enqueue"})
    assert action.execute(context(PROBLEM)).ok
    assert action.execute(context(PROBLEM)).ok
    resolved = action.execute(context(TriggerInfo("beauth-http", "ok", "HTTP 200 in 12ms", "P1", event="resolve")))
    assert resolved.ok and resolved.details["channels"] == {"pagerduty": "sent (HTTP 202)"}
    (_, first), (_, second), (_, resolve) = receiver.requests
    dedup = f"maint-agent/{HOST}/beauth-http"
    assert first == second
    assert first["routing_key"] == ROUTING_KEY and first["dedup_key"] == dedup
    assert first["event_action"] == "trigger"
    assert first["payload"] == {
        "summary": f"beauth-http CRITICAL on {HOST}: connection refused on 127.0.0.1:8080", "source": HOST,
        "severity": "error", "component": "beauth-http",
        "custom_details": {"status": "critical", "summary": "connection refused on 127.0.0.1:8080",
                           "severity": "P1", "event": "trigger"}}
    assert resolve == {"routing_key": ROUTING_KEY, "dedup_key": dedup, "event_action": "resolve"}
    assert_no_secrets(resolved)


@pytest.mark.parametrize("severity, expected", [("P0", "critical"), ("P1", "error"), ("P2", "warning"),
                                                ("P3", "info")])
def test_notify_pagerduty_severity_follows_the_p_levels(receiver, secrets, severity, expected):
    _, key_ref = secrets
    trigger = TriggerInfo("disk-root", "warning", "91% used", severity)
    assert make(pagerduty={"routing_key": key_ref, "url": f"{receiver.url}/v2/enqueue"}).execute(
        context(trigger)).ok
    assert receiver.requests[0][1]["payload"]["severity"] == expected


def test_notify_http_500_fails_naming_the_channel_without_the_secrets(receiver, secrets):
    slack_ref, key_ref = secrets
    action = make(slack={"url": slack_ref("/fail/")}, pagerduty={"routing_key": key_ref,
                                                                 "url": f"{receiver.url}/v2/enqueue"})
    result = action.execute(context())
    assert not result.ok
    assert result.summary.startswith("notify failed: slack: HTTP 500 (internal error at ***)")
    assert result.summary.endswith("; sent: pagerduty")
    assert result.details["channels"]["pagerduty"] == "sent (HTTP 202)"
    assert len(receiver.requests) == 2           # the failing channel did not stop the other one
    assert_no_secrets(result)


def test_notify_unreachable_webhook_fails_without_the_url(closed_port, tmp_path):
    (tmp_path / "hook").write_text(f"http://127.0.0.1:{closed_port}/services/{TOKEN}")
    result = make(slack={"url": "${file:" + str(tmp_path / "hook") + "}"}).execute(context())
    assert not result.ok and result.summary.startswith("notify failed: slack: ConnectError")
    assert_no_secrets(result)


def test_notify_below_min_severity_sends_nothing(receiver, secrets):
    slack_ref, _ = secrets
    result = make(slack={"url": slack_ref()}, min_severity="P1").execute(
        context(TriggerInfo("swap", "warning", "60% used", "P3")))
    assert result.ok and result.summary == "not sent: P3 is below min_severity P1"
    assert receiver.requests == []


def test_notify_dry_run_renders_the_payloads_and_sends_nothing(receiver, secrets):
    slack_ref, key_ref = secrets
    action = make(slack={"url": slack_ref()}, pagerduty={"routing_key": key_ref, "url": f"{receiver.url}/v2/x"},
                  email={"to": ["ops@example.com"]}, dry_run=True)
    result = action.execute(context(dry_run=True))
    assert result.ok and result.summary == f"would notify slack,pagerduty,email: [P1] PROBLEM: beauth-http " \
                                           f"CRITICAL on {HOST}"
    preview = result.details["would_send"]
    assert "connection refused" in preview["slack"]["text"]
    assert preview["pagerduty"]["routing_key"] == "***" and preview["pagerduty"]["event_action"] == "trigger"
    assert preview["email"]["to"] == ["ops@example.com"]
    assert receiver.requests == []
    assert_no_secrets(result)


def test_notify_manual_run_without_a_check_sends_a_test_message(receiver, secrets):
    slack_ref, _ = secrets
    result = make(slack={"url": slack_ref()}).execute(context(None))
    assert result.ok and "test notification" in receiver.requests[0][1]["text"]


class _Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def smtp_server():
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    inbox = _Inbox()
    controller = controller_mod.Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, SmtpSection(host="127.0.0.1", port=controller.port, security="none",
                             sender="maint-agent <maint@example.com>", timeout=5)
    controller.stop()


def test_notify_email_reaches_the_smtp_server(smtp_server):
    inbox, smtp = smtp_server
    result = make(email={"to": ["ops@example.com", "Oncall <oncall@example.com>"]}).execute(context(smtp=smtp))
    assert result.ok and result.details["channels"] == {"email": "sent to 2 recipients"}
    [(recipients, content)] = inbox.messages
    assert recipients == ["ops@example.com", "oncall@example.com"]
    assert f"Subject: [P1] PROBLEM: beauth-http CRITICAL on {HOST}" in content
    assert "connection refused on 127.0.0.1:8080" in content and "severity: P1" in content


def test_notify_email_without_smtp_section_fails_clearly():
    result = make(email={"to": ["ops@example.com"]}).execute(context())
    assert not result.ok and "email notification needs smtp: in the config" in result.summary


def test_notify_needs_a_channel():
    with pytest.raises(ValidationError, match="at least one channel"):
        make()


def test_notify_plain_http_webhook_off_loopback_is_rejected_without_showing_it(write_config):
    config = write_config(f"""
        actions:
          - name: page-ops
            type: notify
            slack: {{url: "http://hooks.example.com/services/{TOKEN}"}}
          - name: page-pd
            type: notify
            pagerduty: {{routing_key: "k", url: "ftp://events.example.com/x"}}
        """)
    out = run_cli("config", "check", str(config))
    assert out.returncode == 2
    assert f"{config}:4: actions[0].slack.url: slack.url must use https://" in out.stderr
    assert f"{config}:7: actions[1].pagerduty.url:" in out.stderr
    assert TOKEN not in out.stderr + out.stdout


def test_notify_target_names_the_channels(secrets):
    slack_ref, key_ref = secrets
    assert make(slack={"url": slack_ref()}, pagerduty={"routing_key": key_ref}).target() == "slack,pagerduty"
