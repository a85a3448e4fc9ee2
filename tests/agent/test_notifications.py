"""Durable notifications: the outbox against the real daemon and real local receivers.

The operator story: Slack answers 503 for a while, PagerDuty is down across an agent restart —
neither loses the page. Every notification (trigger, escalation, resolve) is stored before it is
sent and retried with backoff until the receiver takes it; the receiver gets the identical Slack
text and the same PagerDuty dedup key on every attempt and exactly one accepted delivery; a
notification out of attempts is kept as failed and `notifications resend ID` sends it once the
webhook is fixed. Backoff here is a second or less, not minutes (`delivery:`).
"""

from __future__ import annotations

import json
import re
import socket

import pytest

from agent.notifications import retry_delay
from tests.conftest import wait_for
from tests.fixtures.webhook import Receiver

ROUTING_KEY = "R0UT1NG-outbox-secret-7f3a"
CONFIG = """
agent:
  state_dir: {state}
http:
  listen: 127.0.0.1:{port}
actions:
  - name: page
    type: notify
    settle: 0s
    cooldown: 0s          # a failed first attempt must not make the policy send the notification again
    delivery: {first_retry: 200ms, max_retry: 500ms, attempts: ATTEMPTS}
CHANNELS
checks:
  - name: db
    type: nagios
    every: 200ms
    severity: P1
    command: [/bin/sh, -c, 'read s < STATE; echo "DB state $s"; exit $s']
    actions: [{action: page}]
"""


def config(tmp_path, channels: str, attempts: int = 20) -> str:
    (tmp_path / "state").write_text("2\n")
    return (CONFIG.replace("ATTEMPTS", str(attempts)).replace("STATE", str(tmp_path / "state"))
            .replace("CHANNELS", channels))


def outbox(agent, *statuses: str) -> list[dict]:
    args = ("--status", ",".join(statuses)) if statuses else ()
    out = agent.cli("notifications", "--format", "json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def metric(agent, pattern: str) -> float | None:
    match = re.search(rf"^{pattern} (\S+)$", agent.metrics(), re.M)
    return float(match.group(1)) if match else None


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def test_notify_outbox_backoff_runs_1m_to_1h():
    assert [retry_delay(n, 60, 3600) for n in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_notifications_retried_until_the_receivers_recover_one_delivery_each_resolve_too(
        agent_factory, receivers, tmp_path, monkeypatch):
    slack, pagerduty = receivers(fail_first=3), receivers(fail_first=2)
    monkeypatch.setenv("PD_KEY", ROUTING_KEY)
    agent = agent_factory(config(tmp_path, f"""    slack: {{url: "{slack.url}/services/T0/B0/tok"}}
    pagerduty: {{routing_key: "${{env:PD_KEY}}", url: "{pagerduty.url}/v2/enqueue"}}
""")).start()
    wait_for(lambda: metric(agent, "maint_notifications_pending") == 2, 5, what="both channels queued, failing")
    assert metric(agent, 'maint_notification_failures_total{channel="slack"}') >= 1
    wait_for(lambda: slack.accepted and pagerduty.accepted, 15, what="delivery once the receivers recover")
    wait_for(lambda: metric(agent, "maint_notifications_pending") == 0, 5, what="nothing left pending")

    assert len(slack.requests) == 4 and len(slack.accepted) == 1
    assert len({json.dumps(body) for body in slack.bodies}) == 1, "the identical Slack text on every attempt"
    assert "[P1] PROBLEM: db CRITICAL" in slack.accepted[0][1]["text"]
    assert len(pagerduty.requests) == 3 and len(pagerduty.accepted) == 1
    assert {(b["dedup_key"], b["event_action"]) for b in pagerduty.bodies} == {(pagerduty.bodies[0]["dedup_key"],
                                                                                "trigger")}
    assert metric(agent, 'maint_notification_failures_total{channel="slack"}') == 3
    assert metric(agent, 'maint_notification_failures_total{channel="pagerduty"}') == 2
    assert len(outbox(agent)) == 2, "one notification per channel, however often the check stayed CRITICAL"
    rows = {r["channel"]: r for r in outbox(agent)}
    assert (rows["slack"]["status"], rows["slack"]["attempts"], rows["slack"]["event"]) == ("sent", 4, "trigger")
    assert (rows["pagerduty"]["status"], rows["pagerduty"]["attempts"]) == ("sent", 3)

    (tmp_path / "state").write_text("0\n")       # the database recovers: the resolve goes through the outbox too
    wait_for(lambda: any(b.get("event_action") == "resolve" for _, b in pagerduty.accepted), 10, what="resolve")
    resolve = [b for _, b in pagerduty.accepted if b.get("event_action") == "resolve"]
    assert resolve == [{"routing_key": ROUTING_KEY, "dedup_key": pagerduty.bodies[0]["dedup_key"],
                        "event_action": "resolve"}]
    assert "RESOLVED" in slack.accepted[-1][1]["text"]
    everything = json.dumps(outbox(agent)) + agent.log.read_text()
    assert ROUTING_KEY not in everything and "/services/T0/B0/tok" not in everything


def test_notification_pending_while_the_receiver_is_down_survives_an_agent_restart(agent_factory, tmp_path):
    with socket.socket() as down:                # bound, not listening: every attempt is refused
        down.bind(("127.0.0.1", 0))
        port = down.getsockname()[1]
        agent = agent_factory(config(tmp_path, f"""    slack: {{url: "http://127.0.0.1:{port}/services/T0/B0/tok"}}
""")).start()
        wait_for(lambda: [r for r in outbox(agent, "pending") if r["attempts"] >= 2], 10, what="failed attempts")
        assert agent.stop() == 0
        agent.start()
        wait_for(lambda: [r for r in outbox(agent, "pending") if r["attempts"] >= 3], 10,
                 what="retries by the restarted agent")
    receiver = Receiver(port=port)               # the receiver comes back on its address
    try:
        wait_for(lambda: receiver.accepted, 10, what="delivery after the receiver is back")
        wait_for(lambda: not outbox(agent, "pending", "sending"), 5, what="the outbox to be empty")
        [row] = outbox(agent)
        assert row["status"] == "sent" and row["event"] == "trigger"
        assert len(receiver.requests) == 1, "delivered exactly once, not once per agent process"
        assert "DB state 2" in receiver.accepted[0][1]["text"]
    finally:
        receiver.close()


def test_notification_out_of_attempts_is_kept_and_resent_after_the_webhook_is_fixed(agent_factory, receivers,
                                                                                     tmp_path):
    receiver = receivers()
    hook = tmp_path / "slack-hook"
    hook.write_text(f"{receiver.url}/fail/services/T0/B0/tok\n")     # answers 500 until fixed
    agent = agent_factory(config(tmp_path, f"""    slack: {{url: "${{file:{hook}}}"}}
""", attempts=2)).start()
    [failed] = wait_for(lambda: outbox(agent, "failed"), 10, what="the notification to give up")
    assert failed["attempts"] == 2 and failed["last_error"].startswith("HTTP 500")
    assert len(receiver.requests) == 2 and not receiver.accepted
    hook.write_text(f"{receiver.url}/services/T0/B0/tok\n")          # the operator fixes the webhook
    out = agent.cli("notifications", "resend", str(failed["id"]))
    assert out.returncode == 0 and "queued again" in out.stdout
    wait_for(lambda: receiver.accepted, 5, what="the resent notification")
    assert receiver.accepted[0][1] == receiver.bodies[0], "the same text as the failed attempts"
    assert outbox(agent, "sent")[0]["id"] == failed["id"]
    assert agent.cli("notifications", "resend", "999").returncode == 1
    listing = agent.cli("notifications")
    assert listing.returncode == 0 and "sent" in listing.stdout and "trigger" in listing.stdout
