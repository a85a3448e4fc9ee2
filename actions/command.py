"""`command`: run a configured argv (a service's own restart script, `supervisorctl restart workers`).

The argv comes from the config as a list and runs without a shell, in its own process group (killed as a
whole at the timeout), with an environment built from nothing: PATH, LANG=C and LC_ALL=C, the names in
`pass_env` copied from the agent's environment (never the agent's own: CREDENTIALS_DIRECTORY, NOTIFY_SOCKET …),
and `env` values (which may be secret references).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from actions.base import Action, ActionContext, ActionOptions, ActionResult, cap
from agent.plugin.child_env import AGENT_ONLY, child_env
from agent.plugin.fields import AbsoluteArgv, Secret, SecretStr, SecretUnavailable
from checks.bounded_process import run_bounded



class CommandAction(Action):
    TYPE = "command"
    EXAMPLE = """
        - name: restart-supervised-workers
          type: command
          argv: [/usr/bin/supervisorctl, restart, "workers:*"]
          cooldown: 5m
          max_attempts: 3
          within: 1h
          verify_after: 1m
    """

    class Options(ActionOptions):
        type: Literal["command"]
        argv: AbsoluteArgv = Field(description="program and arguments, e.g. "
                                               "[/usr/bin/supervisorctl, restart, 'workers:*']")
        cwd: str = Field("/", description="working directory")
        env: dict[str, SecretStr] = Field(default_factory=dict, description="extra environment; values may be "
                                                                            "secret references")
        pass_env: tuple[str, ...] = Field((), description="names copied from the agent's environment (not for "
                                                          "secrets: give those in `env` as references, "
                                                          "which are redacted from the output)")
        ok_codes: tuple[int, ...] = Field((0,), description="exit codes that count as success")

        @field_validator("pass_env")
        @classmethod
        def _not_the_agents(cls, names):
            refused = sorted(set(names) & AGENT_ONLY)
            if refused:
                raise ValueError(f"{', '.join(refused)}: the agent's own, never passed to a command")
            return names

    def target(self) -> str:
        return self.options.argv[0]

    def argv(self) -> list[str]:
        return list(self.options.argv)

    def execute(self, ctx: ActionContext) -> ActionResult:
        shown = " ".join(self.options.argv)
        if ctx.dry_run:
            return ActionResult(True, f"would run: {ctx.redact(shown)}", details={"argv": self.argv()})
        try:
            extra = {key: Secret(value).reveal() for key, value in self.options.env.items()}
        except SecretUnavailable as exc:
            return ActionResult(False, f"cannot read a secret for the environment: {exc.reason}")
        env = child_env(extra, passed=self.options.pass_env)
        scrub = [v for v in extra.values() if len(v) >= 4]   # pass_env is for non-secrets (HOME, TZ …)
        redact = ctx.redact

        def scrubbed(text: str) -> str:   # values the agent-wide redactor may not know (rotated since load)
            for value in sorted(scrub, key=len, reverse=True):
                text = text.replace(value, "***")
            return redact(text)

        ctx.redact = scrubbed
        started = ctx.monotonic()
        try:
            done = run_bounded(self.argv(), deadline=started + ctx.timeout, env=env, cwd=self.options.cwd)
        except OSError as exc:
            return ActionResult(False, f"cannot run {self.options.argv[0]}: {exc.strerror or exc}")
        output = cap(ctx.redact(done.output.strip()))
        if done.timed_out:
            return ActionResult(False, f"timed out after {ctx.timeout:g}s (process group killed)", None, output)
        ok = done.returncode in self.options.ok_codes
        summary = f"ran {ctx.redact(shown)}: exit {done.returncode}" + ("" if ok else f" ({ctx.redact(done.reason())})")
        return ActionResult(ok, summary, done.returncode, output, {"argv": self.argv()})
