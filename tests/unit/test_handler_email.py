"""send_email, run directly against a real SMTP server (aiosmtpd on 127.0.0.1, an ephemeral
port): the message as received, the server's replies mapped to retry or no retry, TLS and
login, and the payloads that try to inject headers or are simply wrong."""

from __future__ import annotations

import email
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from jobd.config import load_config
from jobd.domain import PermanentError
from jobd.handlers import registry
from jobd.samples import mail, settings
from jobd.samples.sections import FilesConfig, SmtpConfig
from jobd.testing import make_context

SENDER = "Jobs <jobs@example.com>"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated: bool


@dataclass
class Mailbox:
    """What the test server does: records messages; answers chosen recipients or DATA with
    a chosen reply."""

    messages: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        wire = envelope.content.replace(b"\r\n", b"\n")  # as a mail client would read it
        parsed = email.message_from_bytes(wire, policy=policy.default)
        received = Received(
            envelope.mail_from, list(envelope.rcpt_tos), parsed, bool(session.authenticated)
        )
        self.messages.append(received)
        return "250 Message accepted for delivery"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = (auth_data.login, auth_data.password) == (b"jobd", b"s3cret")
    return AuthResult(success=ok, handled=False)  # not handled: the server answers 535


class EphemeralController(Controller):
    """aiosmtpd's threaded server, on the port the kernel picks (`port=0`)."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class Server:
    mailbox: Mailbox
    port: int


def start_server(**options: Any) -> tuple[EphemeralController, Server]:
    mailbox = Mailbox()
    controller = EphemeralController(
        mailbox,
        hostname="127.0.0.1",
        port=0,
        server_hostname="smtp.test",
        authenticator=_authenticate,
        auth_require_tls=False,
        **options,
    )
    controller.start()
    return controller, Server(mailbox, controller.port)


@pytest.fixture
def server() -> Iterator[Server]:
    controller, srv = start_server()
    yield srv
    controller.stop()


def smtp_settings(port: int, **changes: Any) -> SmtpConfig:
    return replace(SmtpConfig("127.0.0.1", port, "none", None, None, SENDER), **changes)


@pytest.fixture
def configure() -> Iterator[Any]:
    def set_smtp(smtp: SmtpConfig) -> None:
        settings.configure(settings.HandlerSettings(smtp, FilesConfig(())))

    yield set_smtp
    settings.configure(None)


@pytest.fixture
def smtp(server: Server, configure: Any) -> Server:
    configure(smtp_settings(server.port))
    return server


def send(payload: dict[str, Any], job_id: int = 41) -> dict[str, Any]:
    mail.check_email(payload)
    return mail.send_email(make_context(job_id=job_id, type="send_email"), payload)


BASIC = {"to": "ann@example.com", "subject": "Hello", "body": "Hi Ann,\nhow are you?\n"}


# --- what is sent -------------------------------------------------------------------------


def test_registered_with_a_validator() -> None:
    spec = registry.get("send_email")
    assert spec is not None and spec.validator is mail.check_email


def test_a_plain_message(smtp: Server) -> None:
    result = send(BASIC)
    [got] = smtp.mailbox.messages
    assert got.mail_from == "jobs@example.com" and got.rcpt_tos == ["ann@example.com"]
    message = got.message
    assert message["From"] == "Jobs <jobs@example.com>"
    assert message["To"] == "ann@example.com"
    assert message["Subject"] == "Hello"
    assert message["Date"] and message["Message-ID"] == result["message_id"]
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "Hi Ann,\nhow are you?\n"
    assert result == {"message_id": result["message_id"], "recipients": 1}


def test_html_alternative_cc_bcc_and_reply_to(smtp: Server) -> None:
    send(
        {
            **BASIC,
            "to": ["Ann <ann@example.com>", "bob@example.com"],
            "cc": "Carl <carl@example.com>",
            "bcc": ["dora@example.com", "ann@example.com"],  # ann only once in the envelope
            "reply_to": "Support <support@example.com>",
            "html": "<p>Hi <b>Ann</b></p>",
        }
    )
    [got] = smtp.mailbox.messages
    assert got.rcpt_tos == [
        "ann@example.com",
        "bob@example.com",
        "carl@example.com",
        "dora@example.com",
    ]
    message = got.message
    assert message["To"] == "Ann <ann@example.com>, bob@example.com"
    assert message["Cc"] == "Carl <carl@example.com>"
    assert message["Reply-To"] == "Support <support@example.com>"
    assert "Bcc" not in message and "dora" not in got.message.as_string()
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    assert plain.get_content() == BASIC["body"]
    assert rich.get_content() == "<p>Hi <b>Ann</b></p>\n"


def test_non_ascii_text_and_names(smtp: Server) -> None:
    send(
        {
            "to": "Zoë Ångström <zoe@example.com>",
            "subject": "Größe — 10 € ✓",
            "body": "Grüße aus Köln\n",
        }
    )
    message = smtp.mailbox.messages[0].message
    assert message["Subject"] == "Größe — 10 € ✓"
    assert message["To"].addresses[0].display_name == "Zoë Ångström"
    assert message.get_content() == "Grüße aus Köln\n"
    assert all(ord(c) < 128 for c in str(message["Subject"].encode()))  # encoded on the wire


def test_message_id_is_the_same_on_every_attempt_of_a_job(smtp: Server) -> None:
    first = send(BASIC, job_id=41)["message_id"]
    again = send(BASIC, job_id=41)["message_id"]
    other = send(BASIC, job_id=42)["message_id"]
    assert first == again != other
    assert first.startswith("<jobd.41.") and first.endswith("@example.com>")


def test_login(server: Server, configure: Any) -> None:
    configure(smtp_settings(server.port, username="jobd", password="s3cret"))
    send(BASIC)
    assert server.mailbox.messages[0].authenticated


def test_wrong_password_is_permanent(server: Server, configure: Any) -> None:
    configure(smtp_settings(server.port, username="jobd", password="wrong"))
    with pytest.raises(PermanentError, match="535"):
        send(BASIC)
    assert server.mailbox.messages == []


def test_no_password_in_clear_to_a_remote_server(configure: Any) -> None:
    configure(replace(smtp_settings(25, username="jobd", password="x"), host="smtp.example.com"))
    with pytest.raises(PermanentError, match="password would cross the network in clear"):
        send(BASIC)


# --- the server's answers: retry or not ---------------------------------------------------


def test_every_recipient_refused_for_good(smtp: Server) -> None:
    smtp.mailbox.rcpt_replies["ann@example.com"] = "550 5.1.1 No such user"
    with pytest.raises(PermanentError, match=r"refused every recipient.*550 5\.1\.1 No such user"):
        send(BASIC)


def test_every_recipient_refused_for_now_is_retried(smtp: Server) -> None:
    smtp.mailbox.rcpt_replies["ann@example.com"] = "450 4.2.1 Mailbox busy"
    with pytest.raises(mail.SmtpTemporaryError, match="450") as caught:
        send(BASIC)
    assert not isinstance(caught.value, PermanentError)


def test_some_recipients_refused_is_not_retried(smtp: Server) -> None:
    """A retry would send the message again to those who have it."""
    smtp.mailbox.rcpt_replies["bob@example.com"] = "450 4.2.1 Mailbox busy"
    with pytest.raises(PermanentError, match=r"refused 1 of 2 recipients.*others were sent"):
        send({**BASIC, "to": ["ann@example.com", "bob@example.com"]})
    assert smtp.mailbox.messages[0].rcpt_tos == ["ann@example.com"]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("451 4.3.0 Try again later", mail.SmtpTemporaryError),
        ("554 5.6.0 Message rejected", PermanentError),
    ],
)
def test_data_replies(smtp: Server, reply: str, error: type[Exception]) -> None:
    smtp.mailbox.data_reply = reply
    with pytest.raises(error, match=reply[:3]):
        send(BASIC)


def test_connection_refused_is_retried(configure: Any) -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configure(smtp_settings(port))
    with pytest.raises(mail.SmtpTemporaryError, match="ConnectionRefusedError"):
        send(BASIC)


def test_a_server_that_never_answers_times_out_and_is_retried(configure: Any) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        configure(smtp_settings(silent.getsockname()[1]))
        payload = dict(BASIC)
        with pytest.raises(mail.SmtpTemporaryError, match="timed out"):
            mail.send_email(make_context(job_id=41, type="send_email", timeout=0.5), payload)


def test_a_server_that_hangs_up_is_retried(configure: Any) -> None:
    with socket.socket() as rude:
        rude.bind(("127.0.0.1", 0))
        rude.listen()
        configure(smtp_settings(rude.getsockname()[1]))

        def hang_up() -> None:
            conn, _ = rude.accept()
            conn.sendall(b"220 smtp.test ready\r\n")
            conn.recv(1024)
            conn.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        with pytest.raises(mail.SmtpTemporaryError, match=r"Disconnected|Connection"):
            send(BASIC)
        thread.join()


def test_starttls_not_offered_is_permanent(smtp: Server, configure: Any) -> None:
    configure(smtp_settings(smtp.port, tls="starttls"))
    with pytest.raises(PermanentError, match="STARTTLS"):
        send(BASIC)


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    command += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def trusted(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """The certificate trusted by ssl.create_default_context (as a system CA would be)."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    return server_side


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_tls(trusted: ssl.SSLContext, configure: Any, mode: str) -> None:
    options = {"tls_context": trusted} if mode == "starttls" else {"ssl_context": trusted}
    controller, srv = start_server(**options)
    try:
        configure(smtp_settings(srv.port, tls=mode, username="jobd", password="s3cret"))
        send(BASIC)
        assert srv.mailbox.messages[0].authenticated
    finally:
        controller.stop()


def test_an_untrusted_certificate_is_not_accepted(
    certificate: tuple[Path, Path], configure: Any
) -> None:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    controller, srv = start_server(ssl_context=server_side)
    try:
        configure(smtp_settings(srv.port, tls="implicit"))
        with pytest.raises(mail.SmtpTemporaryError, match="CERTIFICATE_VERIFY_FAILED"):
            send(BASIC)
        assert srv.mailbox.messages == []
    finally:
        controller.stop()


# --- payloads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({}, "to: is required"),
        ({"to": [], "subject": "s", "body": "b"}, "to: must not be empty"),
        ({"to": "ann@example.com", "body": "b"}, "subject: is required"),
        ({"to": "ann@example.com", "subject": "s"}, "body: is required"),
        ({**BASIC, "body": 42}, "body: must be a string"),
        ({**BASIC, "html": ["<p>"]}, "html: must be a string"),
        ({**BASIC, "to": "not an address"}, "to: 'not an address' is not"),
        ({**BASIC, "to": "ann@"}, "to: 'ann@' is not an e-mail address"),
        ({**BASIC, "to": "@example.com"}, "to: .* is not"),
        ({**BASIC, "to": "a@b@example.com"}, "to: .* is not"),
        ({**BASIC, "to": "ann@example.com, bob@example.com"}, "is not one valid e-mail"),
        ({**BASIC, "to": "ann@[127.0.0.1]"}, "is not an e-mail address"),
        ({**BASIC, "to": "ann@-example.com"}, "is not an e-mail address"),
        ({**BASIC, "to": "ann@exa mple.com"}, "is not"),
        ({**BASIC, "to": 7}, "to: must be an e-mail address"),
        ({**BASIC, "to": ["ann@example.com", None]}, r"to\[1\]: must be an e-mail address"),
        ({**BASIC, "cc": ["ok@example.com", "bad"]}, r"cc\[1\]: 'bad' is not"),
        ({**BASIC, "reply_to": "x"}, "reply_to: 'x' is not"),
        ({**BASIC, "to": "x" * 600 + "@example.com"}, "to: is longer than 512"),
        ({**BASIC, "subject": "s" * 999}, "subject: is longer than 998"),
        ({**BASIC, "to": [f"u{i}@example.com" for i in range(101)]}, "more than 100 items"),
        (
            {**BASIC, "to": [f"u{i}@example.com" for i in range(60)], "cc": ["c@example.com"] * 41},
            "more than 100 recipients",
        ),
        ({**BASIC, "from": "ceo@example.com"}, "from: unknown field"),
        ({**BASIC, "headers": {"X-Evil": "1"}}, "headers: unknown field"),
    ],
)
def test_bad_payloads(payload: dict[str, Any], match: str, configure: Any) -> None:
    configure(smtp_settings(1))  # never reached: the payload is refused first
    with pytest.raises(ValueError, match=match):
        mail.check_email(payload)
    with pytest.raises(PermanentError, match=match):
        mail.send_email(make_context(job_id=41, type="send_email"), payload)


@pytest.mark.parametrize(
    ("payload", "field_name"),
    [
        ({**BASIC, "subject": "Hi\r\nBcc: victim@example.com"}, "subject"),
        ({**BASIC, "subject": "Hi\nX-Spam: no"}, "subject"),
        ({**BASIC, "subject": "Hi\rthere"}, "subject"),
        ({**BASIC, "subject": "nul\0byte"}, "subject"),
        ({**BASIC, "subject": "sep\u2028arator"}, "subject"),
        ({**BASIC, "to": "ann@example.com\r\nBcc: victim@example.com"}, "to"),
        ({**BASIC, "to": "Ann\n <ann@example.com>"}, "to"),
        ({**BASIC, "cc": ["ok@example.com", "x@example.com\nBcc: v@example.com"]}, r"cc\[1\]"),
        ({**BASIC, "reply_to": "r@example.com\r\nContent-Type: text/html"}, "reply_to"),
    ],
)
def test_header_injection_is_refused(
    payload: dict[str, Any], field_name: str, smtp: Server
) -> None:
    with pytest.raises(ValueError, match=f"{field_name}: must not contain line breaks"):
        mail.check_email(payload)
    with pytest.raises(PermanentError, match=f"{field_name}: must not contain line breaks"):
        mail.send_email(make_context(job_id=41, type="send_email"), payload)
    assert smtp.mailbox.messages == []


def test_validator_needs_no_configuration() -> None:
    settings.configure(None)
    mail.check_email(BASIC)


def test_no_from_address(configure: Any) -> None:
    configure(smtp_settings(1, from_=None))
    with pytest.raises(PermanentError, match=r"smtp\.from is not set"):
        send(BASIC)


def test_daemon_refuses_to_start_without_a_from_address() -> None:
    config = load_config(env={"JOBD_HANDLERS_SAMPLES": "send_email"})
    assert settings.startup_problems(config) == [
        "handlers.samples enables send_email but smtp.from is not set (JOBD_SMTP_FROM):"
        " e-mails need a From address"
    ]
    ok = load_config(env={"JOBD_HANDLERS_SAMPLES": "send_email", "JOBD_SMTP_FROM": SENDER})
    assert settings.startup_problems(ok) == []


# --- header injection through RFC 2047 encoded words --------------------------------------
# Python 3.11.7 decodes an encoded word in a header value it is given and writes the result
# out raw: `=?utf-8?q?=0D=0A?=` in a subject became a line break, and a header of its own.

INJECTED = "=?utf-8?q?Invoice=0D=0AFrom:_CEO_<ceo@bank.example>=0D=0A=0D=0APay_now?="
INJECTIONS = [
    pytest.param({"subject": INJECTED}, "subject", id="the-reported-subject"),
    pytest.param(
        {"subject": "=?utf-8?q?Invoice=0D=0AFrom:_CEO_<ceo@bank.example>=0D=0A...?="},
        "subject",
        id="the-reported-subject-verbatim",
    ),
    pytest.param({"subject": "=?UTF-8?Q?Invoice=0AFrom:_x@evil.example?="}, "subject", id="Q"),
    pytest.param(
        {"subject": "=?utf-8?b?SW52b2ljZQ0KRnJvbTogQ0VPIDxjZW9AYmFuay5leGFtcGxlPg==?="},
        "subject",
        id="b-encoding",
    ),
    pytest.param(
        {"subject": "=?utf-8?q?Invoice?= =?utf-8?q?=0D?= =?utf-8?q?=0ABcc:_x@evil.example?="},
        "subject",
        id="several-words",
    ),
    pytest.param(
        {"subject": "=?utf-8?q?=3D=3Futf-8=3Fq=3F=3D0D=3D0ABcc:_x@evil.example=3F=3D?="},
        "subject",
        id="an-encoded-word-inside-one",
    ),
    pytest.param(
        {"to": "=?utf-8?q?Ann=0D=0ABcc:_x@evil.example?= <ann@example.com>"}, "to", id="to-name"
    ),
    pytest.param(
        {"cc": ["bob@example.com", "=?utf-8?b?Qm9iDQpYOiB5?= <bob2@example.com>"]},
        "cc[1]",
        id="cc-name",
    ),
    pytest.param(
        {"reply_to": "=?utf-8?q?R=0D=0AFrom:_CEO_<ceo@bank.example>?= <r@example.com>"},
        "reply_to",
        id="reply-to-name",
    ),
    pytest.param({"subject": "=?utf-8?q?a=00b?="}, "subject", id="nul"),
]


@pytest.mark.parametrize(("changes", "field"), INJECTIONS)
def test_an_encoded_control_character_is_refused_at_submit(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field.replace('[', '.').replace(']', '.')}: "):
        mail.check_email({**BASIC, **changes})


@pytest.mark.parametrize(("changes", "field"), INJECTIONS)
def test_an_encoded_control_character_sends_nothing(
    smtp: Server, changes: dict[str, Any], field: str
) -> None:
    # The handler checks again: a job may reach the store without passing the validator.
    with pytest.raises(PermanentError, match=f"invalid payload: {field.replace('[', '.')}"):
        mail.send_email(make_context(job_id=41, type="send_email"), {**BASIC, **changes})
    assert smtp.mailbox.messages == []


def test_an_undecodable_encoded_word_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^subject: has an RFC 2047 encoded word"):
        mail.check_email({**BASIC, "subject": "=?x-no-such-charset?q?a?="})


def test_a_harmless_encoded_word_arrives_as_one_header(smtp: Server) -> None:
    send(
        {
            **BASIC,
            "subject": "=?utf-8?q?Caf=C3=A9_=3D_bon?=",
            "to": "=?utf-8?q?Zo=C3=AB?= <z@example.com>",
        }
    )
    [got] = smtp.mailbox.messages
    assert got.message.get_all("From") == ["Jobs <jobs@example.com>"]
    assert got.message.get_all("Bcc") is None
    assert got.rcpt_tos == ["z@example.com"]
    assert got.message["Subject"] == "Café = bon"
