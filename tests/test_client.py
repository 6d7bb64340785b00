"""The HTTP client against canned answers (aioresponses): every status becomes a decision."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import aioresponses

from daemon.config import Organization, Secret
from daemon.errors import AuthProblem, Rejected, Transient, Unmatched
from daemon.qonto import QontoClient, Upload, body_size, build_body

BASE = "https://thirdparty.example.test"
URL = re.compile(r"^https://thirdparty\.example\.test/v2/client_invoices/bulk$")
ORG = Organization(base_url=BASE, login="acme-1", secret=Secret("k3y"))
PDF = b"%PDF-1.7\n..."


def up(name: str, data: bytes = PDF) -> Upload:
    return Upload(name, data, "application/pdf")


@pytest.fixture
async def client() -> AsyncIterator[QontoClient]:
    async with aiohttp.ClientSession() as session:
        yield QontoClient(session, ORG, aiohttp.ClientTimeout(total=2))


async def test_success_maps_names_to_ids(client):
    with aioresponses() as m:
        m.post(URL, payload={"client_invoices": [
            {"invoice_id": "id-b", "file_name": "b.pdf"},
            {"invoice_id": "id-a", "file_name": "a.pdf"},
        ]})
        ids = await client.upload([up("a.pdf"), up("b.pdf", PDF + b"2")])
        assert ids == {"a.pdf": "id-a", "b.pdf": "id-b"}
        ((_, call),) = m.requests.items()
        headers = call[0].kwargs["headers"]
        assert headers["Authorization"] == "acme-1:k3y"
        assert "X-Qonto-Staging-Token" not in headers


async def test_staging_token_header_is_sent():
    org = Organization(BASE, "acme-1", Secret("k3y"), staging_token=Secret("stg"))
    async with aiohttp.ClientSession() as session:
        c = QontoClient(session, org, aiohttp.ClientTimeout(total=2))
        with aioresponses() as m:
            m.post(URL, payload={"client_invoices": [{"invoice_id": "i", "file_name": "a.pdf"}]})
            await c.upload([up("a.pdf")])
            ((_, call),) = m.requests.items()
            assert call[0].kwargs["headers"]["X-Qonto-Staging-Token"] == "stg"


async def test_normalised_names_still_match(client):
    nfd, nfc = "e\u0301te\u0301.pdf", "\u00e9t\u00e9.pdf"
    with aioresponses() as m:
        m.post(URL, payload={"client_invoices": [
            {"invoice_id": "id-1", "file_name": nfc},
            {"invoice_id": "id-2", "file_name": "other.pdf"},
        ]})
        assert await client.upload([up(nfd), up("other.pdf", PDF + b"x")]) == {
            nfd: "id-1", "other.pdf": "id-2"}


async def test_answer_naming_an_unknown_file_is_unmatched(client):
    with aioresponses() as m:
        m.post(URL, payload={"client_invoices": [
            {"invoice_id": "id-1", "file_name": "a.pdf"},
            {"invoice_id": "id-2", "file_name": "renamed.pdf"},
        ]})
        with pytest.raises(Unmatched):
            await client.upload([up("a.pdf"), up("b.pdf", PDF + b"2")])


async def test_answer_missing_a_file_is_unmatched(client):
    with aioresponses() as m:
        m.post(URL, payload={"client_invoices": [{"invoice_id": "id-1", "file_name": "a.pdf"}]})
        with pytest.raises(Unmatched):
            await client.upload([up("a.pdf"), up("b.pdf", PDF + b"2")])


async def test_single_file_matches_whatever_the_name(client):
    with aioresponses() as m:
        m.post(URL, payload={"client_invoices": [{"invoice_id": "id-1", "file_name": "x_y.pdf"}]})
        assert await client.upload([up("x y.pdf")]) == {"x y.pdf": "id-1"}


@pytest.mark.parametrize("body", [
    "<html><body>Log in</body></html>",
    '{"something": "else"}',
    '{"client_invoices": [{"file_name": "a.pdf"}]}',
    '{"client_invoices": "nope"}',
])
async def test_200_that_is_not_the_documented_json_is_transient(client, body):
    with aioresponses() as m:
        m.post(URL, status=200, body=body, content_type="text/html")
        with pytest.raises(Transient) as info:
            await client.upload([up("a.pdf")])
        assert info.value.status == 200


async def test_429_with_retry_after(client):
    with aioresponses() as m:
        m.post(URL, status=429, headers={"Retry-After": "7"},
               payload={"errors": [{"status": "429", "code": "too_many_requests"}]})
        with pytest.raises(Transient) as info:
            await client.upload([up("a.pdf")])
        assert info.value.retry_after_s == 7.0 and info.value.status == 429


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_transient(client, status):
    with aioresponses() as m:
        m.post(URL, status=status, body="upstream trouble")
        with pytest.raises(Transient) as info:
            await client.upload([up("a.pdf")])
        assert info.value.status == status and info.value.retry_after_s is None


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_rejections_carry_the_servers_detail(client, status):
    with aioresponses() as m:
        m.post(URL, status=status, payload={"errors": [
            {"status": str(status), "code": "invalid", "detail": "The invoice number is missing"}
        ], "trace_id": "t"})
        with pytest.raises(Rejected) as info:
            await client.upload([up("a.pdf")])
        assert info.value.detail == "The invoice number is missing"
        assert info.value.code == "invalid" and info.value.status == status


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_problems(client, status):
    with aioresponses() as m:
        m.post(URL, status=status, payload={"errors": [{"code": "unauthorized"}]})
        with pytest.raises(AuthProblem) as info:
            await client.upload([up("a.pdf")])
        assert info.value.status == status and info.value.hint


async def test_redirect_to_a_login_page_is_not_followed(client):
    with aioresponses() as m:
        m.post(URL, status=302, headers={"Location": "https://login.example.test/"})
        with pytest.raises(Transient):
            await client.upload([up("a.pdf")])


async def test_connection_error_is_transient(client):
    with aioresponses() as m:
        m.post(URL, exception=aiohttp.ServerDisconnectedError())
        with pytest.raises(Transient):
            await client.upload([up("a.pdf")])


async def test_timeout_is_transient(client):
    with aioresponses() as m:
        m.post(URL, exception=TimeoutError())
        with pytest.raises(Transient, match="no answer"):
            await client.upload([up("a.pdf")])


async def test_lost_answer_then_retry_returns_the_same_id(client):
    """The server created the invoice but the answer was lost: the retry is safe."""
    with aioresponses() as m:
        m.post(URL, exception=aiohttp.ClientPayloadError("connection lost mid-answer"))
        m.post(URL, payload={"client_invoices": [{"invoice_id": "same", "file_name": "a.pdf"}]})
        with pytest.raises(Transient):
            await client.upload([up("a.pdf")])
        assert await client.upload([up("a.pdf")]) == {"a.pdf": "same"}


async def test_secret_never_appears_in_errors(client):
    with aioresponses() as m:
        m.post(URL, status=401, body="denied")
        with pytest.raises(AuthProblem) as info:
            await client.upload([up("a.pdf")])
    assert "k3y" not in str(info.value) and "k3y" not in repr(ORG)


async def test_body_size_is_exact():
    files = [up("a.pdf", b"x" * 100), up("été \"quoted\".pdf", b"y" * 7), up("c.png", b"z")]

    class Sink:
        def __init__(self) -> None:
            self.data = bytearray()

        async def write(self, chunk: bytes) -> None:
            self.data += chunk

    sink = Sink()
    await build_body(files).write(sink)  # type: ignore[arg-type]
    expected = body_size((f.file_name, f.content_type, len(f.data)) for f in files)
    assert len(sink.data) == expected


SECRET = "s3cr3t-k3y-value"


@pytest.fixture
async def redacting() -> AsyncIterator[QontoClient]:
    from daemon.redact import Redactor

    org = Organization(BASE, "acme-1", Secret(SECRET))
    async with aiohttp.ClientSession() as session:
        yield QontoClient(session, org, aiohttp.ClientTimeout(total=2), Redactor([SECRET]))


async def test_secrets_nested_in_an_error_body_are_cleaned(redacting):
    echoed = {"Authorization": f"acme-1:{SECRET}"}
    with aioresponses() as m:
        m.post(URL, status=422, payload={"errors": [
            {"code": ["invalid", echoed], "detail": {"echo": echoed}, "title": {"h": echoed}},
        ]})
        with pytest.raises(Rejected) as caught:
            await redacting.upload([up("a.pdf")])
    exc = caught.value
    for text in (str(exc), exc.detail, exc.code):
        assert "s3cr3t" not in text and "[redacted]" in text


async def test_a_long_connection_error_is_cleaned_before_it_is_cut(redacting):
    text = "x" * 280 + f"acme-1:{SECRET}"  # the secret straddles the 300-character cut
    with aioresponses() as m:
        m.post(URL, exception=aiohttp.ClientPayloadError(text))
        with pytest.raises(Transient) as caught:
            await redacting.upload([up("a.pdf")])
    assert "s3cr3t" not in str(caught.value) and "s3cr" not in str(caught.value)


# -- Qonto's answers as they really come (QONTO.md) ------------------------------------

INVOICES = f"{BASE}/v2/client_invoices"


@pytest.mark.parametrize("status", [200, 201, 202])
async def test_any_2xx_with_the_documented_body_is_a_bulk_success(client, status):
    with aioresponses() as m:
        m.post(URL, status=status, payload={"client_invoices": [
            {"invoice_id": "id-a", "file_name": "a.pdf"}]})
        assert await client.upload([up("a.pdf")]) == {"a.pdf": "id-a"}


async def test_qonto_s_trace_id_rides_with_every_error(client):
    with aioresponses() as m:
        m.post(URL, status=422, payload={"errors": [{"code": "invalid", "detail": "bad"}],
                                         "trace_id": "abc123"})
        m.post(URL, status=503, payload={"errors": [], "trace_id": "def456"})
        with pytest.raises(Rejected) as rejected:
            await client.upload([up("a.pdf")])
        with pytest.raises(Transient) as transient:
            await client.upload([up("a.pdf")])
    assert rejected.value.trace_id == "abc123" and "trace_id abc123" in str(rejected.value)
    assert transient.value.trace_id == "def456"


async def test_a_trace_id_echoing_the_key_is_cleaned():
    from daemon.redact import Redactor

    async with aiohttp.ClientSession() as session:
        client = QontoClient(session, ORG, aiohttp.ClientTimeout(total=2), Redactor(["k3y"]))
        with aioresponses() as m:
            m.post(URL, status=500, payload={"errors": [], "trace_id": "acme-1:k3y"})
            with pytest.raises(Transient) as info:
                await client.upload([up("a.pdf")])
    assert "k3y" not in str(info.value) and "k3y" not in (info.value.trace_id or "")


async def test_send_by_einvoice_accepts_204_and_an_empty_or_json_2xx(client):
    with aioresponses() as m:
        m.post(f"{INVOICES}/inv-1/send_by_einvoice", status=204)
        m.post(f"{INVOICES}/inv-2/send_by_einvoice", status=200, body="")
        m.post(f"{INVOICES}/inv-3/send_by_einvoice", status=200, payload={})
        for n in (1, 2, 3):
            await client.send_by_einvoice(f"inv-{n}")


@pytest.mark.parametrize("call", ["send", "read", "probe"])
async def test_a_2xx_that_is_not_the_documented_json_is_an_error_everywhere(client, call):
    page = "<!DOCTYPE html><html><body>Log in</body></html>"
    with aioresponses() as m:
        m.post(f"{INVOICES}/inv-1/send_by_einvoice", status=200, body=page,
               content_type="text/html")
        m.get(f"{INVOICES}/inv-1", status=200, body=page, content_type="text/html")
        m.get(re.compile(rf"^{re.escape(INVOICES)}\?per_page=1$"), status=200, body=page,
              content_type="text/html")
        with pytest.raises(Transient, match="not the documented JSON"):
            match call:
                case "send":
                    await client.send_by_einvoice("inv-1")
                case "read":
                    await client.client_invoice("inv-1")
                case "probe":
                    await client.probe()


async def test_the_probe_wants_a_client_invoices_list(client):
    with aioresponses() as m:
        m.get(re.compile(rf"^{re.escape(INVOICES)}\?per_page=1$"),
              payload={"client_invoices": [], "meta": {}})
        m.get(re.compile(rf"^{re.escape(INVOICES)}\?per_page=1$"), payload={"other": 1})
        await client.probe()
        with pytest.raises(Transient, match="client_invoices"):
            await client.probe()


async def test_e_invoicing_refusals_hold_instead_of_pausing(client):
    from daemon.errors import NotYet

    send = f"{INVOICES}/inv-1/send_by_einvoice"
    with aioresponses() as m:
        m.post(send, status=412, payload={"errors": [{
            "code": "recipient_not_reachable_on_einvoicing", "detail": "not reachable"}],
            "trace_id": "t-1"})
        m.post(send, status=403, payload={"errors": [{"code": "forbidden"}], "trace_id": "t-2"})
        m.post(send, status=401, payload={"errors": [{"code": "unauthorized"}]})
        m.post(send, status=412, payload={"errors": [{"code": "invoice_not_in_draft_status"}]})
        m.post(send, status=404, payload={"errors": [{"code": "not_found"}]})
        with pytest.raises(NotYet) as client_held:
            await client.send_by_einvoice("inv-1")
        with pytest.raises(NotYet) as org_held:
            await client.send_by_einvoice("inv-1")
        with pytest.raises(NotYet) as org_held_401:
            await client.send_by_einvoice("inv-1")
        with pytest.raises(Rejected):  # no waiting fixes these
            await client.send_by_einvoice("inv-1")
        with pytest.raises(Rejected):
            await client.send_by_einvoice("inv-1")
    assert client_held.value.held_for == "client" and client_held.value.trace_id == "t-1"
    assert org_held.value.held_for == "organization" and org_held.value.trace_id == "t-2"
    assert org_held_401.value.held_for == "organization"
    assert not isinstance(org_held.value, AuthProblem)  # never an upload pause


async def test_settings_and_clients_are_read_flat_or_wrapped(client):
    with aioresponses() as m:
        m.get(f"{BASE}/v2/einvoicing/settings", payload={"sending_status": "enabled"})
        m.get(f"{BASE}/v2/clients/c-1", payload={"client": {"id": "c-1",
                                                            "e_invoicing_reachable": False}})
        assert (await client.einvoicing_settings())["sending_status"] == "enabled"
        assert (await client.client("c-1"))["e_invoicing_reachable"] is False


async def test_a_huge_answer_is_not_read_whole(client):
    """A lifecycle answer of more than 4 MB is a transient error, never read into memory
    and parsed on the event loop."""
    from daemon.bodies import MAX_ANSWER_BYTES
    from daemon.errors import Transient

    url = re.compile(r"^https://thirdparty\.example\.test/v2/client_invoices/inv-1$")
    events = [{"status_code": "200", "timestamp": "2026-11-30T10:00:00Z",
               "reason": "x" * 1000}] * (MAX_ANSWER_BYTES // 1000)
    with aioresponses() as m:
        m.get(url, payload={"client_invoice": {"id": "inv-1",
                                               "einvoicing_lifecycle_events": events}})
        with pytest.raises(Transient, match="more than"):
            await client.client_invoice("inv-1")
    with aioresponses() as m:  # a large one within the bound is read, off the loop
        m.get(url, payload={"client_invoice": {"id": "inv-1", "einvoicing_status": "submitted",
                                               "notes": "y" * 200_000}})
        found = await client.client_invoice("inv-1")
        assert found["einvoicing_status"] == "submitted"
