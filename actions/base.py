"""The shape every action type has: an options model, `target()`, `execute(ctx)`.

Safety rules every type follows (seed 003, DESIGN "Actions and safety"):
- what runs comes only from the config: argv lists, never a shell string built from values;
- `ctx.dry_run` → evaluate everything (which files, which keys, which statements), change nothing;
- output kept in the result is capped and passed through `ctx.redact` (secrets never reach the audit);
- `execute` never raises for an expected failure (unit missing, server down): it returns ok=False with
  the reason; the engine turns an unexpected exception into a failed result too.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.plugin.fields import Duration, Name, PositiveDuration, Severity

OUTPUT_CAP_CHARS = 4000


class ActionOptions(BaseModel):
    """Fields every action accepts; each type adds its own (and `type: Literal[...]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    name: Name
    type: str
    description: str = ""
    dry_run: bool = Field(False, description="evaluate, audit and notify as 'would run'; change nothing")
    timeout: PositiveDuration = Field(60.0, description="the action's own time limit")
    cooldown: Duration = Field(300.0, description="least time between two attempts for the same check")
    backoff: float = Field(2.0, ge=1.0, le=10.0,
                           description="each further attempt within `within` waits cooldown × backoff^(n-1)")
    max_attempts: int = Field(3, ge=1, le=100, description="attempts allowed within `within`; then remediation is "
                                                     "exhausted until the check settles or an operator resets it")
    within: PositiveDuration = Field(3600.0, description="the window max_attempts counts over")
    verify_after: Duration = Field(30.0, description="re-run the triggering check this long after acting")
    settle: Duration = Field(600.0, description="the check must stay OK this long before the problem counts "
                                                "as resolved (verify for a while before closing)")
    escalate: tuple[Name, ...] = Field((), description="notify actions to run when this action did not help "
                                                       "or its attempts are exhausted")


@dataclass(frozen=True)
class TriggerInfo:
    """Why an action runs: the check result that bound it (None for a manual run)."""

    check: str
    status: str            # ok / warning / critical / unknown
    summary: str
    severity: Severity = "P2"
    details: dict[str, Any] = field(default_factory=dict)
    event: Literal["trigger", "escalate", "resolve"] = "trigger"
    reason: str = ""       # for escalations: "did not help", "attempts exhausted"


@dataclass
class ActionContext:
    timeout: float
    dry_run: bool = False
    trigger: TriggerInfo | None = None
    hostname: str = field(default_factory=socket.gethostname)
    redact: Callable[[str], str] = lambda text: text
    smtp: Any = None       # the config's `smtp:` section (agent.plugin.mailer), for email notifications
    outbox: Any = None     # agent.notifications.Outbox: notifications are stored there before they are sent
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic

    def remaining(self, started: float) -> float:
        return max(0.0, self.timeout - (self.monotonic() - started))


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    summary: str                          # one line: "restarted nginx.service", "removed 12 files (3.1 MiB)"
    exit_code: int | None = None
    output: str = ""                      # capped, redacted excerpt
    details: dict[str, Any] = field(default_factory=dict)


def cap(text: str, limit: int = OUTPUT_CAP_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… ({len(text) - limit} more characters)"


class Action:
    """Base class. A subclass sets TYPE and Options and implements target() and execute()."""

    TYPE: ClassVar[str]
    Options: ClassVar[type[ActionOptions]]
    NOTIFIES: ClassVar[bool] = False     # notify-type actions: sent on trigger and on resolve, never "verified"
    EXAMPLE: ClassVar[str] = ""
    """A short `actions:` entry in YAML, shown in docs/config-reference.md and validated by a test (as checks do)."""

    def __init__(self, options: ActionOptions):
        self.options = options

    def target(self) -> str:
        """What the action acts on ("nginx.service", "/var/backups", "redis 127.0.0.1:6379 db 0"): shown in
        the audit, and one action runs at a time per (type, target)."""
        raise NotImplementedError

    def execute(self, ctx: ActionContext) -> ActionResult:
        raise NotImplementedError
