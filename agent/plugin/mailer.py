"""SMTP delivery of reports and email notifications.

Header injection is closed at both ends: configured addresses are validated when the
config loads (no CR/LF, a real addr-spec), and `build_message` strips line breaks from
the subject and builds every address header from `email.headerregistry.Address`, whose
constructor refuses CR/LF. Errors name the server's answer or the network failure,
never a password. smtplib, ssl and email are imported inside the functions: the config
module imports this file, and the daemon should not pay for mail it never sends.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal, Sequence

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from agent.plugin.fields import AbsolutePath, PositiveDuration, SecretStr

if TYPE_CHECKING:
    from email.headerregistry import Address
    from email.message import EmailMessage

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAMED = re.compile(r'^\s*(?:"(?P<quoted>[^"]*)"|(?P<plain>[^<>"]*?))\s*<(?P<spec>[^<>]+)>\s*$')


def parse_address(text: str) -> "Address":
    """Given `ops@example.com` or `Ops Team <ops@example.com>`, return an Address; raise ValueError
    when it holds a line break or control character, or is not a single valid address with a domain."""
    from email.errors import HeaderParseError
    from email.headerregistry import Address

    if _CONTROL.search(text):
        raise ValueError(f"invalid email address {text!r}: line breaks and control characters are not allowed")
    match = _NAMED.match(text)
    name, spec = (match["quoted"] or match["plain"] or "", match["spec"].strip()) if match else ("", text.strip())
    try:
        address = Address(display_name=name.strip(), addr_spec=spec)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise ValueError(f"invalid email address {text!r}: {exc}") from None
    if not address.username or not address.domain:
        raise ValueError(f"invalid email address {text!r}: expected user@domain")
    return address


def _valid_address(text: str) -> str:
    parse_address(text)
    return text


EmailAddress = Annotated[str, AfterValidator(_valid_address)]
"""An address as written in the config (`ops@example.com`, `Ops <ops@example.com>`), checked at load."""


class SmtpSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(description="SMTP server host name or address")
    port: int = Field(587, ge=1, le=65535, description="587 for starttls, 465 for tls, 25 for none")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls: upgrade after EHLO (fails if the server does not offer it); "
                                "tls: implicit TLS from the first byte; none: plain text (trusted networks only)")
    username: str | None = Field(None, description="log in with this user (with password)")
    password: SecretStr | None = Field(None, description="the user's password, by reference")
    sender: EmailAddress = Field(description="From: address, e.g. 'maint-agent <maint@example.com>'")
    timeout: PositiveDuration = Field(30.0, description="per connect and per server reply")
    ca_file: AbsolutePath | None = Field(None, description="trust this CA bundle (PEM) instead of the system's")
    verify: bool = Field(True, description="verify the server's certificate and host name (false only for tests)")

    @model_validator(mode="after")
    def _credentials_pair(self):
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.password is not None and self.security == "none":
            raise ValueError("a password is never sent over a plain connection: use security starttls or tls")
        return self


class MailError(Exception):
    """A message could not be delivered; the text names the server's answer or the network error."""


def one_line(text: str) -> str:
    """Collapse CR/LF and other control characters into single spaces (a header stays one header)."""
    return re.sub(r"\s+", " ", _CONTROL.sub(" ", text)).strip()


def build_message(sender: str, recipients: Sequence[str], subject: str, text: str, html: str | None = None,
                  attachments: Sequence[tuple[str, str, bytes]] = (), *, date: float | None = None) -> "EmailMessage":
    """Given the parts, return a message: text, or multipart/alternative text+HTML, inside
    multipart/mixed when there are attachments (filename, MIME type, bytes).

    Line breaks in the subject and attachment names are replaced by spaces; an address with
    one raises MailError (it cannot be made safe by guessing which part was meant).
    """
    import email.policy
    import email.utils
    from email.message import EmailMessage

    try:
        from_address = parse_address(sender)
        to_addresses = [parse_address(r) for r in recipients]
    except ValueError as exc:
        raise MailError(str(exc)) from None
    if not to_addresses:
        raise MailError("no recipients")
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = from_address
    message["To"] = to_addresses
    message["Subject"] = one_line(subject)
    message["Date"] = email.utils.formatdate(date, localtime=False)
    message["Message-ID"] = email.utils.make_msgid("maint-agent", domain=from_address.domain)
    message["Auto-Submitted"] = "auto-generated"   # RFC 3834: auto-responders stay quiet
    message.set_content(text, subtype="plain", charset="utf-8")
    if html is not None:
        message.add_alternative(html, subtype="html", charset="utf-8")
    for filename, mime_type, data in attachments:
        maintype, _, subtype = mime_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream",
                               filename=one_line(filename))
    return message


def send_message(smtp: SmtpSection, recipients: list[str], subject: str, text: str, html: str | None = None,
                 attachments: Sequence[tuple[str, str, bytes]] = ()) -> None:
    """Build and send one message; raise MailError when any recipient did not get it."""
    message = build_message(smtp.sender, recipients, subject, text, html, attachments)
    refused = send_bytes(smtp, recipients, message.as_bytes())
    if refused:
        raise MailError(f"recipients refused: {refused}")


def send_bytes(smtp: SmtpSection, recipients: Sequence[str], data: bytes) -> str | None:
    """Send a ready RFC 5322 message to the envelope recipients.

    Return None when every recipient was accepted, or a description of those the server
    refused when others were accepted (the message is delivered; resending would duplicate
    it for them). Raise MailError when nobody got it.
    """
    import smtplib
    import socket
    import ssl

    from agent.plugin.fields import Secret, SecretUnavailable

    try:
        envelope_from = parse_address(smtp.sender).addr_spec
        envelope_to = [parse_address(r).addr_spec for r in recipients]
    except ValueError as exc:
        raise MailError(str(exc)) from None
    where = f"{smtp.host}:{smtp.port}"
    try:
        password = Secret(smtp.password).reveal() if smtp.password is not None else None
    except SecretUnavailable as exc:
        raise MailError(f"cannot read smtp.password: {exc.reason}") from None
    try:
        with _connect(smtp) as client:
            _login(client, smtp, password)
            refused = client.sendmail(envelope_from, envelope_to, data)
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError(f"{where} refused every recipient: {_answers(exc.recipients)}") from None
    except smtplib.SMTPSenderRefused as exc:
        raise MailError(_refusal(smtp, f"refused sender {exc.sender}", exc.smtp_code, exc.smtp_error)) from None
    except smtplib.SMTPConnectError as exc:
        raise MailError(_refusal(smtp, "refused the connection", exc.smtp_code, exc.smtp_error)) from None
    except smtplib.SMTPResponseException as exc:
        raise MailError(_refusal(smtp, "refused the message", exc.smtp_code, exc.smtp_error)) from None
    except smtplib.SMTPServerDisconnected as exc:
        if isinstance(exc.__context__, TimeoutError):   # smtplib wraps a read timeout as a disconnect
            raise MailError(f"{where} did not answer within {smtp.timeout:g}s (timeout)") from None
        raise MailError(f"{where} closed the connection: {exc or 'no reason given'}") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise MailError(f"{where}: {exc}") from None
    except ssl.SSLError as exc:
        raise MailError(f"TLS with {where} failed: {exc.reason or exc}") from None
    except (TimeoutError, socket.timeout):
        raise MailError(f"{where} did not answer within {smtp.timeout:g}s (timeout)") from None
    except ConnectionRefusedError:
        raise MailError(f"cannot connect to {where}: connection refused") from None
    except OSError as exc:
        raise MailError(f"cannot talk to {where}: {exc.strerror or exc}") from None
    return _answers(refused) if refused else None


def _connect(smtp: SmtpSection):
    """An SMTP session after EHLO, upgraded to TLS as configured."""
    import smtplib

    if smtp.security == "tls":
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=_tls_context(smtp))
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    try:
        client.ehlo()
        if smtp.security == "starttls":
            if not client.has_extn("starttls"):
                raise smtplib.SMTPNotSupportedError(
                    "the server does not offer STARTTLS (security: starttls); nothing was sent in clear text")
            client.starttls(context=_tls_context(smtp))
            client.ehlo()
    except BaseException:
        client.close()
        raise
    return client


def _tls_context(smtp: SmtpSection):
    import ssl

    context = ssl.create_default_context(cafile=smtp.ca_file)
    if not smtp.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _login(client, smtp: SmtpSection, password: str | None) -> None:
    """Authenticate when configured. A server that insists on AUTH otherwise answers 530 at MAIL FROM,
    which `_refusal` turns into the missing-credentials message."""
    import smtplib

    if smtp.username is None:
        return
    if not client.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("the server offers no AUTH, but smtp.username is configured")
    try:
        client.login(smtp.username, password or "")
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"{smtp.host}:{smtp.port} rejected the login of user {smtp.username!r}: "
                        f"{exc.smtp_code} {_text(exc.smtp_error)}") from None


def _refusal(smtp: SmtpSection, what: str, code: int, answer: bytes | str) -> str:
    """The server's answer; an "authentication required" refusal also says what the config lacks."""
    reason = f"{smtp.host}:{smtp.port} {what}: {code} {_text(answer)}"
    wants_auth = code == 530 or (code in (550, 553, 554) and b"auth" in _bytes(answer).lower())
    if wants_auth and smtp.username is None:
        reason += " — the server requires authentication, but smtp.username/password are not configured"
    return reason


def _answers(refused: dict) -> str:
    return "; ".join(f"{address}: {code} {_text(answer)}" for address, (code, answer) in refused.items())


def _text(answer: bytes | str) -> str:
    return one_line(answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer))


def _bytes(answer: bytes | str) -> bytes:
    return answer if isinstance(answer, bytes) else str(answer).encode()
