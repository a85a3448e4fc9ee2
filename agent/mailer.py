"""SMTP delivery of reports and email notifications (stub: completed by the reports work, issue 6)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.fields import Duration, SecretStr


class SmtpSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(description="SMTP server")
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(description="From: address")
    timeout: Duration = 30.0


class MailError(Exception):
    """A message could not be delivered; the text names the server's answer or the network error."""
