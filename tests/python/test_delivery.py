"""Verification codes delivered by the real binary: by mail to an SMTP
server on loopback (aiosmtpd), and by a signed webhook to a local HTTP
receiver, checked with the Standard Webhooks reference library. The code
is read from what was delivered, never from the API, and never appears in
the server's logs."""

import email
import email.policy
import http.server
import json
import re
import socket
import threading

import grpc
import pytest
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook, WebhookVerificationError

from conftest import Server
from test_python_client import error_reason

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def logged(code, logs):
    """Whether the code appears in the logs as a number of its own, outside
    the timestamps (whose microseconds are six digits too)."""
    logs = re.sub(r'"timestamp":"[^"]*"', "", logs)
    return re.search(rf"(?<!\d){code}(?!\d)", logs) is not None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self):
        self.messages = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content))
        self.arrived.set()
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


class Receiver(http.server.BaseHTTPRequestHandler):
    received = None

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    received = []
    handler = type("Handler", (Receiver,), {"received": received})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/roster/codes", received
    httpd.shutdown()
    httpd.server_close()


def create_user(channel, stubs, **fields):
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    return grpc_users.UserServiceStub(channel).CreateUser(
        users.CreateUserRequest(unverified_identifiers=True, **fields)
    ).user


def test_code_by_smtp_verifies_the_address(backend, stubs, smtp, tmp_path):
    controller, inbox = smtp
    # An operator's German subject; the bodies stay built-in.
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "verification_code.subject").write_text("Ihr Code: {{code}}\n")
    server = Server(
        backend,
        {
            "ROSTER_EMAIL_DELIVERY": "smtp",
            "ROSTER_SMTP_HOST": "127.0.0.1",
            "ROSTER_SMTP_PORT": str(controller.port),
            "ROSTER_SMTP_TLS": "none",
            "ROSTER_SMTP_FROM": "Roster <no-reply@roster.test>",
            "ROSTER_EMAIL_TEMPLATES": str(tmp_path),
        },
    )
    try:
        emails, grpc_emails = stubs["emails"], stubs["emails_grpc"]
        with grpc.insecure_channel(server.address) as channel:
            user = create_user(channel, stubs, email_addresses=["ada@example.com"], locale="de-AT")
            address = user.email_addresses[0]
            client = grpc_emails.EmailAddressServiceStub(channel)
            prepared = client.PrepareEmailAddressVerification(
                emails.PrepareEmailAddressVerificationRequest(id=address.id)
            )
            assert prepared.code == "", "a delivered code is not returned"
            assert inbox.arrived.wait(10), "no mail arrived"
            [(recipients, content)] = inbox.messages
            assert recipients == ["ada@example.com"]
            mail = email.message_from_bytes(content, policy=email.policy.default)
            assert mail["From"] == "Roster <no-reply@roster.test>"
            code = re.fullmatch(r"Ihr Code: (\d{6})", mail["Subject"]).group(1)
            text = mail.get_body(("plain",)).get_content()
            html = mail.get_body(("html",)).get_content()
            assert code in text and f"<strong>{code}</strong>" in html

            verified = client.AttemptEmailAddressVerification(
                emails.AttemptEmailAddressVerificationRequest(id=address.id, code=code)
            ).email_address
            assert verified.verification.status == stubs["user"].VERIFICATION_STATUS_VERIFIED
            assert verified.primary
    finally:
        server.stop()
    assert not logged(code, server.logs), "a code reached the logs"
    assert "verification code delivered" in server.logs


def test_code_by_webhook_is_signed(backend, stubs, webhook):
    url, received = webhook
    server = Server(
        backend,
        {
            "ROSTER_EMAIL_DELIVERY": "webhook",
            "ROSTER_SMS_DELIVERY": "webhook",
            "ROSTER_WEBHOOK_URL": url,
            "ROSTER_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
    )
    try:
        phones = stubs["phones"]
        grpc_phones = stubs["phones_grpc"]
        with grpc.insecure_channel(server.address) as channel:
            user = create_user(channel, stubs, phone_numbers=["+14155550123"], locale="en-GB")
            number = user.phone_numbers[0]
            client = grpc_phones.PhoneNumberServiceStub(channel)
            prepared = client.PreparePhoneNumberVerification(
                phones.PreparePhoneNumberVerificationRequest(id=number.id)
            )
            assert prepared.code == ""
            [(headers, body)] = received
            # The reference verifier accepts the signature ...
            payload = Webhook(WEBHOOK_SECRET).verify(body, headers)
            assert payload["kind"] == "sms"
            assert payload["to"] == "+14155550123"
            assert payload["locale"] == "en-GB"
            assert payload["user_id"] == user.id
            assert payload["identification_id"] == number.id
            assert payload["expire_at"] == (
                prepared.phone_number.verification.expire_at.ToMilliseconds()
            )
            code = payload["code"]
            assert re.fullmatch(r"\d{6}", code)
            # ... and refuses a tampered body or another secret.
            tampered = body.replace(code.encode(), b"000000" if code != "000000" else b"111111")
            with pytest.raises(WebhookVerificationError):
                Webhook(WEBHOOK_SECRET).verify(tampered, headers)
            with pytest.raises(WebhookVerificationError):
                Webhook("whsec_" + "A" * 32).verify(body, headers)
            assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/json"

            verified = client.AttemptPhoneNumberVerification(
                phones.AttemptPhoneNumberVerificationRequest(id=number.id, code=code)
            ).phone_number
            assert verified.verification.status == stubs["user"].VERIFICATION_STATUS_VERIFIED
    finally:
        server.stop()
    assert not logged(code, server.logs), "a code reached the logs"


def test_failed_delivery_is_unavailable(backend, stubs):
    server = Server(
        backend,
        {
            "ROSTER_EMAIL_DELIVERY": "smtp",
            "ROSTER_SMTP_HOST": "127.0.0.1",
            "ROSTER_SMTP_PORT": str(free_port()),
            "ROSTER_SMTP_TLS": "none",
            "ROSTER_SMTP_FROM": "no-reply@roster.test",
        },
    )
    try:
        emails, grpc_emails = stubs["emails"], stubs["emails_grpc"]
        with grpc.insecure_channel(server.address) as channel:
            user = create_user(channel, stubs, email_addresses=["lost@example.com"])
            client = grpc_emails.EmailAddressServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                client.PrepareEmailAddressVerification(
                    emails.PrepareEmailAddressVerificationRequest(id=user.email_addresses[0].id)
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(err.value) == ("DELIVERY_FAILED", "roster.dev")
            with pytest.raises(grpc.RpcError) as err:
                client.AttemptEmailAddressVerification(
                    emails.AttemptEmailAddressVerificationRequest(
                        id=user.email_addresses[0].id, code="123456"
                    )
                )
            assert error_reason(err.value)[0] == "VERIFICATION_NOT_PREPARED"
    finally:
        server.stop()
