"""`notify`: tell people about a check's problem, an escalation, or its resolution (routed by incident level P0–P3).

Channels: a Slack-compatible incoming webhook (`{"text": …}`), PagerDuty Events
API v2 (trigger, and resolve with the same stable `dedup_key`
`maint-agent/HOST/CHECK`, so PagerDuty folds repeats into one incident and the
resolve closes it) and email through the report mailer. Every configured
channel is tried; the result is ok only when all of them accepted, and each is
reported on its own. A webhook URL and a routing key are secrets: they are read
at the moment of sending and never appear in a result, error or log — a failure
names the channel and the HTTP status only. A manual run without a triggering
check sends a test message (severity P3) so an operator can try the routes.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from actions.base import Action, ActionContext, ActionOptions, ActionResult, TriggerInfo
from agent.plugin.fields import (
    PositiveDuration, Secret, SecretStr, SecretUnavailable, Severity, check_http_url, secrets_are_offline,
)
from agent.plugin.mailer import EmailAddress
from agent.plugin.redact import url_parts

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SEVERITY = {"P0": "critical", "P1": "error", "P2": "warning", "P3": "info"}
SEVERITY_RANK = {"P0": 0, "P1": 1, "P2": 2, "P3": 3}
SUMMARY_CAP_CHARS = 1024          # PagerDuty's payload.summary limit
BODY_EXCERPT_CHARS = 200


def check_webhook_url(url: str, field: str) -> str:
    """Given a URL, return it; raise ValueError unless it is https://…, or http:// to a loopback host (tests,
    a local relay). The message never quotes the URL: a webhook's path is its secret."""
    try:
        check_http_url(url, field, "an http(s) URL", "a webhook URL carries its secret in the path")
    except ValueError as exc:
        raise ValueError(str(exc).replace(repr(url), "(value not shown)")) from None
    parts = urlsplit(url)
    if parts.scheme == "http" and not _loopback(parts.hostname or ""):
        raise ValueError(f"{field} must use https:// (plain http is allowed only to a loopback address)")
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackChannel(_Channel):
    url: SecretStr = Field(description="the incoming-webhook URL as a secret reference, e.g. "
                                       "${file:/etc/maint-agent/slack-webhook}")

    @field_validator("url")
    @classmethod
    def _url(cls, url):
        if not secrets_are_offline():   # offline (`config check --offline`) the URL is not read
            check_webhook_url(Secret(url).reveal(), "slack.url")
        return url


class PagerDutyChannel(_Channel):
    routing_key: SecretStr = Field(description="the Events API v2 integration (routing) key, as a secret "
                                               "reference")
    url: str = Field(PAGERDUTY_EVENTS_URL, description="the Events API v2 endpoint")

    @field_validator("url")
    @classmethod
    def _url(cls, url):
        return check_webhook_url(url, "pagerduty.url")


class EmailChannel(_Channel):
    to: tuple[EmailAddress, ...] = Field(description="recipient addresses (sent through `smtp:`)")

    @field_validator("to")
    @classmethod
    def _someone(cls, to):
        # not min_length: pydantic would add "0 items" to the error of a single bad address
        if not to:
            raise ValueError("name at least one recipient")
        return to


class Delivery(_Channel):
    """How long a notification that could not be delivered is retried (the outbox: agent/notifications.py)."""

    first_retry: PositiveDuration = Field(60.0, description="wait after the first failed attempt; doubled after "
                                                            "each further one")
    max_retry: PositiveDuration = Field(3600.0, description="the longest wait between two attempts")
    attempts: int = Field(10, ge=1, le=1000, description="attempts in all; then the notification is failed, kept "
                                                          "and listed by `maint-agent notifications` for `resend`")

    @model_validator(mode="after")
    def _order(self):
        if self.max_retry < self.first_retry:
            raise ValueError("max_retry must not be shorter than first_retry")
        return self


class NotifyAction(Action):
    """Send a check's problem, escalation or resolution to Slack, PagerDuty (Events API v2) and/or email."""

    TYPE = "notify"
    EXAMPLE = """
        - name: page-oncall
          type: notify
          min_severity: P1
          pagerduty: {routing_key: "${credential:pagerduty.key}"}
          slack: {url: "${credential:slack.webhook}"}
    """
    NOTIFIES = True

    class Options(ActionOptions):
        type: Literal["notify"]
        slack: SlackChannel | None = Field(
            None, description="a Slack-compatible incoming webhook: {url: ${file:/etc/maint-agent/slack-webhook}}")
        pagerduty: PagerDutyChannel | None = Field(
            None, description="PagerDuty Events API v2: {routing_key: ${credential:pagerduty}, url: (default "
                              f"{PAGERDUTY_EVENTS_URL})}}")
        email: EmailChannel | None = Field(
            None, description="email through the config's `smtp:`: {to: [ops@example.com, …]}")
        min_severity: Severity = Field("P3", description="send only for checks at least this severe "
                                                         "(P0 most); default P3: all")
        delivery: Delivery = Field(default_factory=Delivery,
                                   description="retries of an undelivered notification: {first_retry: 1m, "
                                               "max_retry: 1h, attempts: 10}")

        @model_validator(mode="after")
        def _a_channel(self):
            if not (self.slack or self.pagerduty or self.email):
                raise ValueError("configure at least one channel: slack, pagerduty or email")
            return self

    def channels(self) -> list[str]:
        return [name for name in ("slack", "pagerduty", "email") if getattr(self.options, name) is not None]

    def target(self) -> str:
        return ",".join(self.channels())

    def execute(self, ctx: ActionContext) -> ActionResult:
        trigger = ctx.trigger or TriggerInfo("maint-agent-test", "ok", "test notification (manual run)", "P3")
        if SEVERITY_RANK[trigger.severity] > SEVERITY_RANK[self.options.min_severity]:
            return ActionResult(True, f"not sent: {trigger.severity} is below min_severity "
                                      f"{self.options.min_severity}", details={"skipped": True})
        message = Message(trigger, ctx)
        if ctx.dry_run:
            return ActionResult(True, f"would notify {self.target()}: {message.title}",
                                details={"would_send": {name: self._preview(name, message)
                                                        for name in self.channels()}})
        started = ctx.monotonic()
        parcels = {name: self.payload(name, message) for name in self.channels()}
        outcomes = self._through_outbox(parcels, message, ctx, started) if ctx.outbox is not None else None
        if outcomes is None:   # no store to queue in (a test's context, a store write that failed): send once
            outcomes = {}
            for name, parcel in parcels.items():
                left = ctx.remaining(started)
                text = (self.deliver(name, parcel, smtp=ctx.smtp, timeout=left, redact=ctx.redact) if left > 0
                        else "failed: not sent, the time limit was reached")
                outcomes[name] = ("sent" if text.startswith("sent") else "failed", text)
        details = {"channels": {name: text for name, (_, text) in outcomes.items()}, "dedup_key": message.dedup_key}
        sent = [name for name, (state, _) in outcomes.items() if state == "sent"]
        retrying = {name: text for name, (state, text) in outcomes.items() if state == "retrying"}
        failed = {name: text for name, (state, text) in outcomes.items() if state == "failed"}
        if failed or retrying:
            # the attempt failed (the audit says so); with nothing failed for good the outbox delivers it
            # later, so the policy must not send the notification again (`queued`)
            details["queued"] = not failed
            summary = ("notify failed: " + "; ".join(f"{name}: {text.removeprefix('failed: ')}"
                                                     for name, text in {**failed, **retrying}.items())
                       + (f"; sent: {', '.join(sent)}" if sent else ""))
            return ActionResult(False, ctx.redact(summary), details=details)
        return ActionResult(True, ctx.redact(f"notified {self.target()}: {message.title}"), details=details)

    def _through_outbox(self, parcels: dict[str, dict], message: "Message", ctx: ActionContext,
                        started: float) -> dict[str, tuple[str, str]] | None:
        """Queue the notification in the outbox and make the first attempt; None when it cannot be queued."""
        import sqlite3
        try:
            return ctx.outbox.send(self.options, check=message.trigger.check, event=message.trigger.event,
                                   dedup_key=message.dedup_key, title=message.title, parcels=parcels,
                                   deadline=started + ctx.timeout, monotonic=ctx.monotonic)
        except (sqlite3.Error, OSError):
            return None

    def _preview(self, channel: str, message: "Message") -> dict[str, Any]:
        """What would be sent, secrets left out (the routing key shows as ***)."""
        if channel == "pagerduty":
            return {"routing_key": "***", **self.payload(channel, message)}
        return self.payload(channel, message)

    def payload(self, channel: str, message: "Message") -> dict[str, Any]:
        """What one channel receives, as stored in the outbox and sent byte for byte on every attempt; the
        secrets (webhook URL, routing key) are not part of it."""
        if channel == "slack":
            return message.slack()
        if channel == "pagerduty":
            return message.pagerduty()
        return {"to": list(self.options.email.to), "subject": message.title, "text": message.text}

    def deliver(self, channel: str, payload: dict[str, Any], *, smtp, timeout: float,
                redact: Callable[[str], str]) -> str:
        """Send one channel's payload now; return "sent …" or "failed: …" (never the URL or the key)."""
        try:
            if channel == "email":
                return _email(smtp, payload, timeout, redact)
            if channel == "slack":
                url = Secret(self.options.slack.url).reveal()
                return _post(url, payload, timeout, [url])
            if channel == "pagerduty":
                key = Secret(self.options.pagerduty.routing_key).reveal()
                return _post(self.options.pagerduty.url, {"routing_key": key, **payload}, timeout, [key])
        except SecretUnavailable as exc:
            return f"failed: cannot read its secret {exc.reference}: {exc.reason}"
        return f"failed: {channel} is not configured for this action any more"


def _email(smtp, payload: dict[str, Any], timeout: float, redact: Callable[[str], str]) -> str:
    if smtp is None:
        return "failed: email notification needs smtp: in the config"
    from agent.plugin.mailer import MailError, send_message

    try:
        send_message(smtp.model_copy(update={"timeout": min(smtp.timeout, timeout)}), list(payload["to"]),
                     payload["subject"], payload["text"])
    except MailError as exc:
        return f"failed: {redact(str(exc))}"
    return f"sent to {len(payload['to'])} recipient{'s' * (len(payload['to']) != 1)}"


class Message:
    """One notification rendered for every channel from the trigger (text already redacted)."""

    def __init__(self, trigger: TriggerInfo, ctx: ActionContext):
        self.trigger = trigger
        self.host = ctx.hostname
        self.dedup_key = f"maint-agent/{ctx.hostname}/{trigger.check}"[:255]
        kind = {"trigger": "PROBLEM", "escalate": "ESCALATION", "resolve": "RESOLVED"}[trigger.event]
        self.title = ctx.redact(f"[{trigger.severity}] {kind}: {trigger.check} {trigger.status.upper()} "
                                f"on {self.host}")
        lines = [self.title, f"host: {self.host}", f"check: {trigger.check}", f"status: {trigger.status}",
                 f"severity: {trigger.severity}", f"summary: {trigger.summary}"]
        if trigger.reason:
            lines.append(f"reason: {trigger.reason}")
        self.text = ctx.redact("\n".join(lines))
        self.check_summary = ctx.redact(trigger.summary)
        self.summary = ctx.redact(f"{trigger.check} {trigger.status.upper()} on {self.host}: {trigger.summary}"
                                  + (f" ({trigger.reason})" if trigger.reason else ""))

    def slack(self) -> dict[str, Any]:
        return {"text": self.text}

    def pagerduty(self) -> dict[str, Any]:
        """An Events API v2 event without its routing key (added when sent): resolve carries only the
        dedup_key; trigger and escalate trigger."""
        event = {"dedup_key": self.dedup_key,
                 "event_action": "resolve" if self.trigger.event == "resolve" else "trigger"}
        if self.trigger.event == "resolve":
            return event
        summary = self.summary if len(self.summary) <= SUMMARY_CAP_CHARS else self.summary[:SUMMARY_CAP_CHARS - 1] + "…"
        event["payload"] = {
            "summary": summary, "source": self.host, "severity": PAGERDUTY_SEVERITY[self.trigger.severity],
            "component": self.trigger.check,
            "custom_details": {"status": self.trigger.status, "summary": self.check_summary,
                               "severity": self.trigger.severity, "event": self.trigger.event,
                               **({"reason": self.trigger.reason} if self.trigger.reason else {})},
        }
        event["client"] = "maint-agent"
        return event


def _post(url: str, body: dict[str, Any], timeout: float, secrets: list[str]) -> str:
    """POST JSON; return "sent (HTTP n)" or "failed: …" with the URL, its path, each of its secret parts
    (a receiver answering "token <last segment> rejected") and `secrets` scrubbed."""
    import httpx

    hidden = sorted({url, urlsplit(url).path, *url_parts(url), *secrets}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in hidden:
            if secret and secret != "/":
                text = text.replace(secret, "***")
        return text

    try:
        with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False) as client:
            response = client.post(url, json=body)
    except httpx.HTTPError as exc:
        return f"failed: {type(exc).__name__}" + (f": {scrub(str(exc))}" if str(exc) else "")
    if response.is_success:
        return f"sent (HTTP {response.status_code})"
    excerpt = scrub(response.text.strip().replace("\n", " ")[:BODY_EXCERPT_CHARS])
    return f"failed: HTTP {response.status_code}" + (f" ({excerpt})" if excerpt else "")
