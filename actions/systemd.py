"""`systemd_restart` / `systemd_start`: (re)start one unit (e.g. restart a service whose endpoint fails).

The argv is fixed: `systemctl --no-ask-password restart -- UNIT` (or `start`), run
directly — the packaged unit's polkit rule lets the agent's user manage the
listed units — or as `sudo -n systemctl …` for hosts that grant it in sudoers
instead (`-n`: never wait for a password). `--` ends systemctl's options, so no
unit name could be read as one (names starting with `-` are refused anyway);
`--no-ask-password` keeps a manual run from a terminal from stopping at a polkit
password prompt. With `confirm_active`, `systemctl is-active` must then report
the unit active (polled while it is still activating, within the timeout).
"""

from __future__ import annotations

import re
import time
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from actions.base import Action, ActionContext, ActionOptions, ActionResult, cap
from agent.plugin.child_env import child_env
from agent.plugin.fields import AbsolutePath
from checks.bounded_process import Finished, run_bounded

_UNIT_TYPES = ("service", "socket", "target", "timer", "mount", "automount", "path", "swap", "slice")
_UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]*\.(" + "|".join(_UNIT_TYPES) + r")$")
_ENV = child_env({"SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"})
ACTIVE_POLL_SECONDS = 0.5


def check_unit_name(unit: str) -> str:
    """Given a unit name from the config, return it; raise ValueError unless it is one literal unit name."""
    if not _UNIT_RE.match(unit):
        raise ValueError(f"{unit!r} is not a unit name: letters, digits and ':_.\\@-', not starting with '-', "
                         f"ending in a unit type such as .service ({', '.join(_UNIT_TYPES)}); no '/', spaces "
                         f"or globs")
    return unit


class _SystemdAction(Action):
    """Shared by both verbs; a subclass sets TYPE, VERB and Options."""

    VERB: ClassVar[str]

    class Options(ActionOptions):
        unit: str = Field(description="the unit, e.g. beauth.service or beauth@1.service")
        via: Literal["systemctl", "sudo"] = Field(
            "systemctl", description="systemctl: run it as the agent's user (allowed by polkit, see the README); "
                                     "sudo: run `sudo -n systemctl …` (allowed by a sudoers line)")
        systemctl: AbsolutePath = Field("/usr/bin/systemctl", description="the systemctl program")
        sudo: AbsolutePath = Field("/usr/bin/sudo", description="the sudo program (with via: sudo)")
        confirm_active: bool = Field(False, description="afterwards, `systemctl is-active` must report the unit "
                                                        "active, else the action failed")

        @field_validator("unit")
        @classmethod
        def _unit(cls, unit):
            return check_unit_name(unit)

    def target(self) -> str:
        return self.options.unit

    def argv(self) -> list[str]:
        opts = self.options
        command = [opts.systemctl, "--no-ask-password", self.VERB, "--", opts.unit]
        return [opts.sudo, "-n", *command] if opts.via == "sudo" else command

    def execute(self, ctx: ActionContext) -> ActionResult:
        argv = self.argv()
        details = {"argv": argv}
        if ctx.dry_run:
            return ActionResult(True, f"would run: {' '.join(argv)}", details=details)
        started = ctx.monotonic()
        try:
            done = run_bounded(argv, deadline=started + ctx.timeout, env=_ENV, monotonic=ctx.monotonic)
        except OSError as exc:
            return ActionResult(False, f"cannot run {argv[0]}: {exc.strerror or exc}", details=details)
        output = cap(ctx.redact(done.output.strip()))
        if done.timed_out:
            return ActionResult(False, f"{self.VERB} {self.options.unit} timed out after {ctx.timeout:g}s "
                                       f"(process group killed)", None, output, details)
        if done.returncode != 0:
            return ActionResult(False, f"{self.VERB} {self.options.unit} failed: exit {done.returncode} "
                                       f"({ctx.redact(done.reason())})", done.returncode, output, details)
        done_verb = "restarted" if self.VERB == "restart" else "started"
        if not self.options.confirm_active:
            return ActionResult(True, f"{done_verb} {self.options.unit}", 0, output, details)
        state = self._wait_active(ctx, started)
        details["state"] = state
        if state != "active":
            return ActionResult(False, f"{done_verb} {self.options.unit}, but it is {state}", 0, output, details)
        return ActionResult(True, f"{done_verb} {self.options.unit}; it is active", 0, output, details)

    def _wait_active(self, ctx: ActionContext, started: float) -> str:
        """Poll `systemctl is-active` while the unit is still (re)starting; return the last state seen.

        is-active needs no privilege, so it never goes through sudo.
        """
        argv = [self.options.systemctl, "is-active", "--", self.options.unit]
        while True:
            try:
                done: Finished = run_bounded(argv, deadline=ctx.monotonic() + ctx.remaining(started), env=_ENV,
                                             monotonic=ctx.monotonic)
            except OSError as exc:
                return f"unknown (cannot run {argv[0]}: {exc.strerror or exc})"
            if done.timed_out:
                return "unknown (is-active timed out)"
            state = (done.output.strip().splitlines() or [f"unknown (exit {done.returncode})"])[-1]
            if state not in ("activating", "reloading") or ctx.remaining(started) <= ACTIVE_POLL_SECONDS:
                return state
            time.sleep(ACTIVE_POLL_SECONDS)


class SystemdRestartAction(_SystemdAction):
    """Restart a systemd unit: `systemctl restart -- UNIT`, directly (polkit) or through `sudo -n`."""

    TYPE = "systemd_restart"
    EXAMPLE = """
        - name: restart-api
          type: systemd_restart
          unit: api.service
          cooldown: 2m
          max_attempts: 3
          within: 1h
          verify_after: 30s
          escalate: [page-oncall]
    """
    VERB = "restart"

    class Options(_SystemdAction.Options):
        type: Literal["systemd_restart"]


class SystemdStartAction(_SystemdAction):
    """Start a systemd unit that stopped: `systemctl start -- UNIT`, directly (polkit) or through `sudo -n`."""

    TYPE = "systemd_start"
    EXAMPLE = """
        - name: start-backup-timer
          type: systemd_start
          unit: backup.timer
          confirm_active: true
          cooldown: 10m
    """
    VERB = "start"

    class Options(_SystemdAction.Options):
        type: Literal["systemd_start"]
