"""The daemon's decisions for each answer, with canned answers (aioresponses).

The Service runs for real (folders, SQLite, watcher); only the HTTP answers are
scripted, so each status can be forced in a known order.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
from aioresponses import CallbackResult, aioresponses
from helpers import LOGIN, sha256_of, wait_for

BASE = "https://thirdparty.example.test"
URL = re.compile(r"^https://thirdparty\.example\.test/v2/client_invoices/bulk$")


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def sent_names(body: aiohttp.MultipartWriter) -> list[str]:
    """The file names in a multipart body, as the server would read them."""
    return [
        re.search(r'filename="([^"]*)"', part[0].headers["Content-Disposition"]).group(1)
        for part in body._parts
    ]


def ok(*names: str) -> dict[str, Any]:
    return {"payload": {"client_invoices": [
        {"invoice_id": f"id-{n}", "file_name": n} for n in names]}}


def cfg(ws, **upload: Any):
    return ws.config(BASE, upload={"linger_seconds": 0.3, **upload})


async def test_429_honours_retry_after_then_imports(ws, start, _logs):
    ws.invoice("a.pdf")
    with aioresponses() as m:
        m.post(URL, status=429, headers={"Retry-After": "0.5"}, payload={"errors": []})
        m.post(URL, status=503, body="maintenance")
        m.post(URL, **ok("a.pdf"))
        assert await asyncio.wait_for((await start(cfg(ws), once=True)).task, 30) == 0
    retries = events(_logs, "batch_retry")
    assert [r["status"] for r in retries] == [429, 503]
    assert retries[0]["delay_s"] >= 0.5 and retries[0]["retry_after_s"] == 0.5
    assert (ws.done / "a.pdf").exists()


async def test_lost_answer_is_retried_and_recorded_once(ws, start, _logs):
    path = ws.invoice("a.pdf")
    sha = sha256_of(path)
    with aioresponses() as m:
        m.post(URL, exception=aiohttp.ServerDisconnectedError())
        m.post(URL, exception=TimeoutError())
        m.post(URL, **ok("a.pdf"))
        assert await asyncio.wait_for((await start(cfg(ws), once=True)).task, 30) == 0
    assert len(events(_logs, "batch_retry")) == 2
    (imported,) = events(_logs, "file_imported")
    assert imported["invoice_id"] == "id-a.pdf" and imported["sha256"] == sha


async def queued_behind_a_request(ws, start, _logs, release, names, sent) -> Any:
    """Run the daemon with one slot; once `first.pdf` is in flight (`sent()`, its
    answer held until `release`), drop `names`: they wait together, then go as one request."""
    ws.invoice("first.pdf")
    running = await start(cfg(ws, concurrency=1))
    await wait_for(sent, what="first.pdf in flight")
    for name in names:
        ws.invoice(name)
    await wait_for(lambda: len(events(_logs, "file_queued")) == 1 + len(names),
                   what="the batch queued")
    release.set()
    return running


async def test_422_in_a_batch_is_split_until_the_bad_file_is_alone(ws, start, _logs):
    answered: list[list[str]] = []
    release = asyncio.Event()

    async def answer(url: Any, **kwargs: Any) -> CallbackResult:
        names = sent_names(kwargs["data"])
        answered.append(names)
        if names == ["first.pdf"]:
            await release.wait()
        if "b.pdf" in names:
            return CallbackResult(status=422, payload={"errors": [
                {"status": "422", "code": "invalid", "detail": "b.pdf: VAT number is invalid"}]})
        return CallbackResult(payload=ok(*names)["payload"])

    with aioresponses() as m:
        m.post(URL, callback=answer, repeat=True)
        running = await queued_behind_a_request(ws, start, _logs, release,
                                                ["a.pdf", "b.pdf", "c.pdf"], lambda: answered)
        await wait_for(lambda: (ws.failed / "b.pdf.error.json").exists()
                       and len(list(ws.done.iterdir())) == 3, what="b.pdf failed, the rest done")
        await running.stop()
    assert answered[0] == ["first.pdf"]
    assert sorted(answered[1]) == ["a.pdf", "b.pdf", "c.pdf"]
    assert ["b.pdf"] in answered
    assert {p.name for p in ws.done.iterdir()} == {"first.pdf", "a.pdf", "c.pdf"}
    report = json.loads((ws.failed / "b.pdf.error.json").read_text())
    assert report["detail"] == "b.pdf: VAT number is invalid" and report["http_status"] == 422


async def test_unmatched_answer_marks_nothing_then_resends_smaller(ws, start, _logs):
    release = asyncio.Event()
    answers = iter([
        # The pair: one name the daemon never sent.
        {"client_invoices": [{"invoice_id": "x", "file_name": "a.pdf"},
                             {"invoice_id": "y", "file_name": "zzz.pdf"}]},
    ])

    answered: list[list[str]] = []

    async def answer(url: Any, **kwargs: Any) -> CallbackResult:
        names = sent_names(kwargs["data"])
        answered.append(names)
        if names == ["first.pdf"]:
            await release.wait()
            return CallbackResult(payload=ok("first.pdf")["payload"])
        if len(names) == 2:
            return CallbackResult(payload=next(answers))
        return CallbackResult(payload={"client_invoices": [
            {"invoice_id": f"single-{names[0]}", "file_name": "whatever.pdf"}]})

    with aioresponses() as m:
        m.post(URL, callback=answer, repeat=True)
        running = await queued_behind_a_request(ws, start, _logs, release, ["a.pdf", "b.pdf"],
                                                lambda: answered)
        await wait_for(lambda: len(events(_logs, "file_imported")) == 3, what="three imported")
        await running.stop()
    assert events(_logs, "batch_split")
    assert {e["invoice_id"] for e in events(_logs, "file_imported")} == {
        "id-first.pdf", "single-a.pdf", "single-b.pdf"}


async def test_401_pauses_without_failing_and_once_leaves_the_file(ws, start, _logs):
    ws.invoice("a.pdf")
    with aioresponses() as m:
        m.post(URL, status=401, payload={"errors": [{"code": "token_expired"}]}, repeat=True)
        assert await asyncio.wait_for((await start(cfg(ws), once=True)).task, 30) == 1
    (paused,) = events(_logs, "org_paused")
    assert paused["status"] == 401 and "secret key" in paused["hint"]
    assert (ws.inbox / "a.pdf").exists() and not ws.failed.exists()


async def test_401_while_running_retries_after_a_growing_pause(ws, start, _logs):
    ws.invoice("a.pdf")
    with aioresponses() as m:
        m.post(URL, status=401, payload={"errors": []})
        m.post(URL, status=401, payload={"errors": []})
        m.post(URL, **ok("a.pdf"))
        running = await start(cfg(ws))
        await wait_for(lambda: (ws.done / "a.pdf").exists(), what="a.pdf in done/")
        assert await running.stop() == 0
    pauses = [e["pause_s"] for e in events(_logs, "org_paused")]
    assert pauses == [0.3, 0.6]


async def test_200_html_login_page_is_not_success(ws, start, _logs):
    ws.invoice("a.pdf")
    with aioresponses() as m:
        m.post(URL, status=200, body="<html>Sign in</html>", content_type="text/html")
        m.post(URL, **ok("a.pdf"))
        assert await asyncio.wait_for((await start(cfg(ws), once=True)).task, 30) == 0
    (retry,) = events(_logs, "batch_retry")
    assert "not JSON" in retry["error"] and "staging" in retry["error"]
    assert LOGIN  # the same organization throughout
