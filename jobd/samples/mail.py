"""`send_email`: one e-mail, built with `email.message.EmailMessage` and sent with `smtplib` to
the SMTP server in the configuration (`smtp.*`).  Enabled by `handlers.samples: [send_email]`.

Payload::

    {"to": "ann@example.com" | ["Ann <ann@example.com>", ...],   required
     "subject": "...",                                          required, one line
     "body": "plain text",                                      required
     "html": "<p>...</p>",                # an HTML alternative to the text
     "cc": ..., "bcc": ...,               # like `to`
     "reply_to": ...}                     # like `to`

The From address is `smtp.from`, never the payload's: whoever may submit jobs must not be able
to send as anyone they like.  No header value (subject, addresses and their names) may hold a
control character, written out or inside an RFC 2047 encoded word (`=?utf-8?q?=0D=0A?=`).

Failures: a bad payload or address, or a 5xx reply (the server refuses for good), is a
PermanentError; a 4xx reply (the server asks to come back later) or a connection that fails is
an ordinary error, retried with the job's backoff.  If the server takes the message for some
recipients and refuses others, the job fails without a retry: a retry would send the message
again to those who already have it.  Each message carries a Message-ID made from the job's id
and payload, the same on every attempt, so a copy sent twice after a crash can be recognised.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import smtplib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from jobd.config import is_loopback
from jobd.context import JobContext
from jobd.domain import PermanentError
from jobd.handlers import handler
from jobd.samples import settings
from jobd.samples.payload import (
    Payload,
    checked,
    has_control_characters,
    one_or_many,
    only_fields,
    text,
)
from jobd.samples.sections import SmtpConfig

FIELDS = ("to", "cc", "bcc", "reply_to", "subject", "body", "html")
MAX_RECIPIENTS = 100  # to + cc + bcc: a mailing list is not one job
MAX_ADDRESS = 512  # characters in one address, display name included
MAX_SUBJECT = 998  # the longest line RFC 5322 allows
MAX_DECODINGS = 3  # encoded words within encoded words: more is an attack, not a subject
SMTP_TIMEOUT = 60.0  # seconds for each network operation, unless the job's timeout is shorter


class SmtpTemporaryError(Exception):
    """The SMTP server could not be reached, or asked us to try again later (4xx)."""


@dataclass(frozen=True)
class Email:
    """A checked send_email payload."""

    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    body: str
    html: str | None

    @property
    def recipients(self) -> list[str]:
        """Envelope recipients, each once."""
        return list(dict.fromkeys(a.addr_spec for a in (*self.to, *self.cc, *self.bcc)))


def parse_email(payload: Payload) -> Email:
    """The payload, checked; raises ValueError("field: problem")."""
    only_fields(payload, FIELDS)
    to, cc, bcc = (_addresses(payload, name, required=name == "to") for name in ("to", "cc", "bcc"))
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise ValueError(f"to: more than {MAX_RECIPIENTS} recipients in to, cc and bcc together")
    return Email(
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=_addresses(payload, "reply_to", required=False),
        subject=_header_text(payload, "subject"),
        body=text(payload, "body") or "",
        html=text(payload, "html", required=False),
    )


def _addresses(payload: Payload, name: str, *, required: bool) -> tuple[Address, ...]:
    items = one_or_many(payload, name, required=required, max_items=MAX_RECIPIENTS)
    if len(items) == 1:
        return (parse_address(name, items[0]),)
    return tuple(parse_address(f"{name}[{i}]", item) for i, item in enumerate(items))


def parse_address(field: str, value: object) -> Address:
    """One address, `ann@example.com` or `Ann <ann@example.com>`, strictly: a value the
    parser had to repair (a defect) is refused rather than guessed at."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}: must be an e-mail address")
    if len(value) > MAX_ADDRESS:
        raise ValueError(f"{field}: is longer than {MAX_ADDRESS} characters")
    check_header_value(field, value)
    try:
        header = policy.default.header_factory("to", value)
    except Exception:  # the header parser fails on some malformed input (IndexError on "a@")
        raise ValueError(f"{field}: {value!r} is not an e-mail address") from None
    addresses = header.addresses
    if header.defects or len(addresses) != 1:
        raise ValueError(f"{field}: {value!r} is not one valid e-mail address")
    address: Address = addresses[0]
    if not address.username or not _valid_domain(address.domain):
        raise ValueError(f"{field}: {value!r} is not an e-mail address (user@domain)")
    return address


def _header_text(payload: Payload, name: str) -> str:
    value = text(payload, name, max_length=MAX_SUBJECT, single_line=True) or ""
    check_header_value(name, value)
    return value


def check_header_value(field: str, value: str) -> None:
    """Refuse a header value that is, or decodes to, control characters: CR or LF would end
    the header and start one of the submitter's choosing.  Decoded too because some Python
    releases decode RFC 2047 encoded words (`=?utf-8?q?=0D=0A?=`) in a value they are given
    and write the result out raw; what decodes to another encoded word is decoded again."""
    for _ in range(MAX_DECODINGS):
        if has_control_characters(value):
            raise ValueError(f"{field}: must not contain line breaks or other control characters")
        decoded = _decode_encoded_words(field, value)
        if decoded == value:
            return
        value = decoded
    raise ValueError(f"{field}: has encoded words nested more than {MAX_DECODINGS} deep")


def _decode_encoded_words(field: str, value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        raise ValueError(f"{field}: has an RFC 2047 encoded word that cannot be decoded") from None


def _valid_domain(domain: str) -> bool:
    """A DNS name (internationalised ones too); no address literals like [127.0.0.1]."""
    if not domain or len(domain) > 253:
        return False
    for label in domain.split("."):
        try:
            ascii_label = label.encode("idna").decode("ascii") if not label.isascii() else label
        except UnicodeError:
            return False
        if not 0 < len(ascii_label) <= 63 or ascii_label[0] == "-" or ascii_label[-1] == "-":
            return False
        if not all(c.isalnum() or c == "-" for c in ascii_label):
            return False
    return True


def check_email(payload: Payload) -> None:
    """Submit-time validator."""
    parse_email(payload)


@handler("send_email", max_attempts=5, timeout=120, validator=check_email)
def send_email(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Send one e-mail; returns its Message-ID and how many recipients the server took."""
    mail = checked(parse_email, payload)
    smtp = settings.current().smtp
    sender = _sender(smtp)
    message = build_message(mail, sender, message_id(ctx.job_id, payload, sender))
    ctx.check_cancelled()
    deliver(smtp, message, sender.addr_spec, mail.recipients, _timeout(ctx))
    ctx.logger.info(
        "e-mail sent",
        extra={"message_id": message["Message-ID"], "recipients": len(mail.recipients)},
    )
    return {"message_id": message["Message-ID"], "recipients": len(mail.recipients)}


def _sender(smtp: SmtpConfig) -> Address:
    if not smtp.from_:
        raise PermanentError("smtp.from is not set: jobd has no From address to send with")
    try:
        return parse_address("smtp.from", smtp.from_)
    except ValueError as exc:
        raise PermanentError(f"the configuration's {exc}") from None


def message_id(job_id: int, payload: Payload, sender: Address) -> str:
    """The same on every attempt of one job, and different for another job or payload."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    domain = sender.domain if sender.domain.isascii() else "jobd.invalid"
    return f"<jobd.{job_id}.{digest}@{domain}>"


def build_message(mail: Email, sender: Address, msg_id: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    if mail.cc:
        message["Cc"] = mail.cc
    if mail.reply_to:
        message["Reply-To"] = mail.reply_to
    message["Subject"] = mail.subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = msg_id
    message.set_content(mail.body)
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html")
    return message  # Bcc recipients are in the envelope only


def _timeout(ctx: JobContext) -> float:
    return min(SMTP_TIMEOUT, ctx.timeout) if ctx.timeout else SMTP_TIMEOUT


# --- talking to the server ----------------------------------------------------------------


def deliver(
    smtp: SmtpConfig, message: EmailMessage, sender: str, recipients: Iterable[str], timeout: float
) -> None:
    """Send `message`; raise PermanentError or SmtpTemporaryError as the failure deserves."""
    recipients = list(recipients)
    where = f"SMTP server {smtp.host}:{smtp.port}"
    if smtp.username and smtp.tls == "none" and not is_loopback(smtp.host):
        raise PermanentError(
            f"{where}: smtp.username is set but smtp.tls is none: the password would cross the"
            " network in clear (use starttls or implicit)"
        )
    try:
        client = _connect(smtp, timeout)
    except Exception as exc:
        raise classify(exc, where) from exc
    try:
        try:
            if smtp.username:
                client.login(smtp.username, smtp.password or "")
            refused = client.send_message(message, from_addr=sender, to_addrs=recipients)
        except Exception as exc:
            raise classify(exc, where) from exc
    finally:
        _close(client)
    if refused:
        # Some recipients have the message now: a retry would send it to them again.
        raise PermanentError(
            f"{where} refused {len(refused)} of {len(recipients)} recipients"
            f" ({_describe_refusals(refused)}); the others were sent the message"
        )


def _connect(smtp: SmtpConfig, timeout: float) -> smtplib.SMTP:
    if smtp.tls == "implicit":
        return smtplib.SMTP_SSL(
            smtp.host, smtp.port, timeout=timeout, context=ssl.create_default_context()
        )
    client = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
    if smtp.tls == "starttls":
        try:
            client.starttls(context=ssl.create_default_context())
        except BaseException:
            _close(client)
            raise
    return client


def _close(client: smtplib.SMTP) -> None:
    """QUIT, ignoring failures: the outcome is decided by then, and an error here must not
    turn a delivered message into a retry."""
    try:
        client.quit()
    except Exception:
        with contextlib.suppress(Exception):
            client.close()


def classify(exc: BaseException, where: str) -> Exception:
    """The error a handler raises for an SMTP failure: PermanentError when retrying cannot
    help, SmtpTemporaryError (retried with backoff) when it may."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = f"{where} refused every recipient ({_describe_refusals(exc.recipients)})"
        if codes and all(400 <= code < 500 for code in codes):
            return SmtpTemporaryError(detail)
        return PermanentError(detail)
    if isinstance(exc, smtplib.SMTPResponseException):
        detail = f"{where}: {exc.smtp_code} {_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500:
            return SmtpTemporaryError(detail)
        return PermanentError(detail)
    detail = f"{where}: {type(exc).__name__}: {exc}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SmtpTemporaryError(detail)
    if isinstance(exc, smtplib.SMTPException):  # (an OSError too, so tested first)
        # SMTPNotSupportedError (no STARTTLS, no AUTH, no SMTPUTF8) and other protocol
        # mismatches: the configuration or the server must change first.
        return PermanentError(detail)
    if isinstance(exc, OSError):  # refused, reset, timed out, name not found, TLS failures
        return SmtpTemporaryError(detail)
    return PermanentError(detail)  # a bug or a value smtplib cannot send: retrying won't help


def _describe_refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{addr}: {code} {_text(reply)}" for addr, (code, reply) in refused.items())


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())[:300]
