"""The journal: versioned and migrated, clear when unusable, patient when the disk is full."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import aiosqlite
import pytest
from helpers import ENV, LOGIN, events, names, sha256_of, wait_for

from daemon import cli
from daemon import config as config_mod
from daemon.errors import JournalError
from daemon.journal import SCHEMA_VERSION, Journal

# The journal as version 0.1.0 made it: no user_version.
SCHEMA_0_1_0 = """
CREATE TABLE IF NOT EXISTS invoices (
    org TEXT NOT NULL, sha256 TEXT NOT NULL, state TEXT NOT NULL, invoice_id TEXT,
    path BLOB NOT NULL, file_name TEXT NOT NULL, size INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (org, sha256));
CREATE INDEX IF NOT EXISTS invoices_sha256 ON invoices (sha256);
CREATE INDEX IF NOT EXISTS invoices_state ON invoices (state);
"""


async def test_a_journal_of_the_previous_version_is_migrated(tmp_path):
    db = tmp_path / "state.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA_0_1_0)
        conn.execute(
            "INSERT INTO invoices VALUES (?, ?, 'done', 'inv-1', ?, 'a.pdf', 10, 1, NULL, ?, ?)",
            (LOGIN, "ab" * 32, os.fsencode(tmp_path / "done" / "a.pdf"), "t0", "t1"),
        )
    conn.close()
    journal = await Journal.open(db)
    try:
        row = await journal.get(LOGIN, "ab" * 32)
        assert row is not None and row.invoice_id == "inv-1" and row.state == "done"
    finally:
        await journal.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_a_journal_of_a_newer_version_is_refused(tmp_path):
    db = tmp_path / "state.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(JournalError, match="newer version"):
        await Journal.open(db)


def unusable(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """`run` on this journal: exit 78 and one clear line, no traceback."""
    raw = {
        "qonto": {"login": LOGIN, "secret_key_env": "QONTO_SECRET_KEY"},
        "database": {"path": str(db)},
        "folders": [{"inbox": str(tmp_path / "in"), "done": str(tmp_path / "done"),
                     "failed": str(tmp_path / "failed")}],
    }
    from helpers import to_toml

    toml = tmp_path / "config.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")
    os.environ.update(ENV)
    assert cli.main(["run", "--config", str(toml), "--once"]) == 78
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in out + err and "journal_unusable" in lines[0]
    assert "[database] path" in lines[0]
    return lines[0]


def test_a_damaged_journal_is_one_clear_error(tmp_path, capsys):
    db = tmp_path / "state.sqlite3"
    db.write_bytes(os.urandom(8192))
    line = unusable(tmp_path, db, capsys)
    assert "backup" in line
    assert db.stat().st_size == 8192  # left as it was for a person to look at


def test_a_journal_path_that_is_a_folder_or_under_a_file(tmp_path, capsys):
    (tmp_path / "a-folder").mkdir()
    assert "a directory, not a file" in unusable(tmp_path, tmp_path / "a-folder", capsys)
    (tmp_path / "a-file").write_text("x")
    assert "cannot create its folder" in unusable(tmp_path, tmp_path / "a-file" / "s.db", capsys)


async def test_a_full_disk_under_the_journal_pauses_work_until_space_returns(
    ws, qonto, start, tmpfs, _logs
):
    emulator, url = qonto
    state = tmpfs("state", size="1m")
    raw = ws.config_dict(url)
    raw["database"]["path"] = str(state / "state.sqlite3")
    running = await start(config_mod.from_dict(raw, env=ENV, base_dir=ws.root))
    await wait_for(lambda: events(_logs, "daemon_started"), what="the daemon to start")
    filler = state / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    for i in range(3):
        ws.invoice(f"full-{i}.pdf", f"FULL-{i}")
    await wait_for(lambda: events(_logs, "journal_unavailable"), what="journal_unavailable")
    assert not running.task.done()  # the daemon stays up
    assert "space" in events(_logs, "journal_unavailable")[0]["hint"]
    assert names(ws.inbox) >= {"full-0.pdf", "full-1.pdf", "full-2.pdf"} - names(ws.done)
    filler.unlink()
    await wait_for(lambda: len(names(ws.done)) == 3, what="the three files in done/")
    assert events(_logs, "journal_available")
    assert len(events(_logs, "journal_unavailable")) == 1  # said once
    assert {sha256_of(ws.done / n) for n in names(ws.done)} == set(emulator.invoices_of(LOGIN))
    assert await running.stop() == 0


async def test_a_journal_deleted_under_the_daemon_is_noticed(ws, qonto, start, _logs):
    _, url = qonto
    running = await start(ws.config(url))
    await wait_for(lambda: events(_logs, "daemon_started"), what="the daemon to start")
    for suffix in ("", "-wal", "-shm"):
        await asyncio.to_thread(Path(f"{ws.db}{suffix}").unlink, missing_ok=True)
    assert await asyncio.wait_for(running.task, 30) == 1
    (lost,) = events(_logs, "journal_lost")
    assert lost["log_level"] == "critical" and lost["hint"]


async def test_a_journal_of_schema_1_gets_the_invoice_facts_columns(tmp_path):
    """Schema 1 is what the previous release wrote: the same tables, versioned."""
    db = tmp_path / "state.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA_0_1_0)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO invoices VALUES (?, ?, 'done', 'inv-1', ?, 'a.pdf', 10, 1, NULL, ?, ?)",
            (LOGIN, "cd" * 32, os.fsencode(tmp_path / "a.pdf"), "t0", "t1"),
        )
    conn.close()
    journal = await Journal.open(db)
    try:
        old = await journal.get(LOGIN, "cd" * 32)
        assert old is not None and old.invoice_id == "inv-1" and old.facts is None
        from daemon.invoice_xml import Invoice

        invoice = Invoice(attachment="factur-x.xml", flavor="factur-x", profile="minimum",
                          number="F-1", seller="ACME", seller_key="fr1", grand_total="12.00",
                          currency="EUR")
        await journal.enqueue(LOGIN, "ef" * 32, tmp_path / "b.pdf", "b.pdf", 10, invoice)
        new = await journal.get(LOGIN, "ef" * 32)
        assert new is not None and new.facts is not None and new.facts["number"] == "F-1"
        (found,) = await journal.find_numbers(LOGIN, "fr1", "F-1", None, other_than="00" * 32)
        assert found.sha256 == "ef" * 32
    finally:
        await journal.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"invoices", "organizations", "oauth_tokens", "einvoices"} <= tables
    conn.close()


async def test_a_journal_of_schema_2_gets_the_einvoices_table(tmp_path):
    """Schema 2 is what the previous main wrote: its rows stay, e-invoices are added."""
    from daemon.journal.schema import MIGRATE_TO_2 as _MIGRATE_TO_2
    from daemon.journal.schema import statements as _statements

    db = tmp_path / "state.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA_0_1_0)
        for statement in _statements(_MIGRATE_TO_2):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO invoices (org, sha256, state, invoice_id, path, file_name, size, "
            "attempts, created_at, updated_at) VALUES (?, ?, 'done', 'inv-1', ?, 'a.pdf', 10, 1, "
            "'t0', 't1')",
            (LOGIN, "cd" * 32, os.fsencode(tmp_path / "a.pdf")),
        )
    conn.close()
    journal = await Journal.open(db)
    try:
        old = await journal.get(LOGIN, "cd" * 32)
        assert old is not None and old.invoice_id == "inv-1" and old.state == "done"
        assert await journal.einvoices_of(LOGIN, "cd" * 32) == []  # imported before: not sent
        await journal.enqueue(LOGIN, "ef" * 32, tmp_path / "b.pdf", "b.pdf", 10)
        await journal.record_imported(LOGIN, {"ef" * 32: "inv-2"},
                                      einvoice={"ef" * 32: tmp_path / "b.pdf"})
        (e,) = await journal.einvoices_of(LOGIN, "ef" * 32)
        assert e.state == "pending" and e.invoice_id == "inv-2" and e.codes == []
        assert e.path == tmp_path / "b.pdf"
    finally:
        await journal.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_a_journal_of_schema_3_keeps_its_e_invoices_with_their_events(tmp_path):
    """Schema 3 is what the previous main wrote: lifecycle events were [code, when]."""
    from daemon.journal.schema import MIGRATE_TO_2, MIGRATE_TO_3, statements

    db = tmp_path / "state.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA_0_1_0)
        for statement in statements(MIGRATE_TO_2) + statements(MIGRATE_TO_3):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 3")
        conn.execute(
            "INSERT INTO invoices (org, sha256, state, invoice_id, path, file_name, size, "
            "attempts, last_error, created_at, updated_at) VALUES (?, ?, 'done', 'inv-1', ?, "
            "'a.pdf', 10, 1, NULL, 't0', 't1')",
            (LOGIN, "cd" * 32, os.fsencode(tmp_path / "done" / "a.pdf")),
        )
        conn.execute(
            "INSERT INTO einvoices (org, invoice_id, sha256, state, einvoicing_status, "
            "lifecycle, next_at, submitted_at, created_at, updated_at) VALUES "
            "(?, 'inv-1', ?, 'submitted', 'received', ?, 0, '2026-11-01T10:00:00+00:00', "
            "'2026-11-01T10:00:00.000+00:00', 't1')",
            (LOGIN, "cd" * 32,
             '[[200, "2026-11-01T10:00:05+00:00"], [202, "2026-11-01T11:00:00+00:00"]]'),
        )
        conn.execute(
            "INSERT INTO einvoices (org, invoice_id, sha256, state, lifecycle, detail, next_at, "
            "created_at, updated_at) VALUES (?, 'inv-2', ?, 'rejected', '[]', 'refused', 0, "
            "'2026-11-01T10:00:00.000+00:00', 't1')",
            (LOGIN, "ef" * 32),
        )
    conn.close()
    journal = await Journal.open(db)
    try:
        (e,) = await journal.einvoices_of(LOGIN, "cd" * 32)
        assert e.state == "submitted" and e.codes == [200, 202]
        # v3 kept the time of its own look, not Qonto's: none, until the next look.
        assert [x.at for x in e.events] == [None, None]
        assert e.events[0].reason is None and e.held_for is None and e.path is None
        (rejected,) = await journal.einvoices_of(LOGIN, "ef" * 32)
        assert rejected.state == "rejected" and rejected.detail == "refused"
        assert (await journal.get(LOGIN, "cd" * 32)).trace_id is None
        # Still sent again on request, as before.
        assert await journal.retry_einvoices(LOGIN, "ef" * 32) == 1
    finally:
        await journal.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    conn.close()


async def test_a_migration_cut_short_leaves_the_journal_as_it_was(tmp_path):
    db = tmp_path / "state.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA_0_1_0)
        conn.execute("PRAGMA user_version = 1")
        # A column the migration will add: the ALTER TABLE for it fails half-way.
        conn.execute("ALTER TABLE invoices ADD COLUMN currency TEXT")
    conn.close()
    with pytest.raises(JournalError):
        await Journal.open(db)
    with sqlite3.connect(db) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(invoices)")]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    assert "flavor" not in columns  # nothing of the migration stayed


def test_lookup_beside_a_daemon_of_the_previous_version(tmp_path, capsys):
    """The package is upgraded, the old daemon still runs: its journal is schema 1."""
    import hashlib
    import json as jsonlib

    from helpers import to_toml

    invoice = tmp_path / "a.pdf"
    invoice.write_bytes(b"%PDF-1.7 old\n%%EOF\n")
    sha = hashlib.sha256(invoice.read_bytes()).hexdigest()
    db = tmp_path / "state.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA_0_1_0)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO invoices VALUES (?, ?, 'done', 'inv-1', ?, 'a.pdf', 10, 1, NULL, ?, ?)",
            (LOGIN, sha, os.fsencode(invoice), "t0", "t1"),
        )
    conn.close()
    raw = {"qonto": {"login": LOGIN, "secret_key_env": "QONTO_SECRET_KEY"},
           "database": {"path": str(db)},
           "folders": [{"inbox": str(tmp_path / "in"), "done": str(tmp_path / "done"),
                        "failed": str(tmp_path / "failed")}]}
    toml = tmp_path / "config.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")
    os.environ.update(ENV)
    assert cli.main(["lookup", "--config", str(toml), "--json", str(invoice)]) == 0
    row = jsonlib.loads(capsys.readouterr().out)
    assert row["invoice_id"] == "inv-1" and row["facturx"] is None


def _rows(path: Path, state: str) -> int:
    """What another process reading the file would see: only committed rows."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM invoices WHERE state = ?", (state,)).fetchone()[0]


class Disk(aiosqlite.Connection):
    """SQLite at the edge: its commits counted, the next `full` of them refused."""

    def __init__(self, path: Path) -> None:
        super().__init__(lambda: sqlite3.connect(path), 64)
        self.commits = 0
        self.full = 0

    async def commit(self) -> None:
        self.commits += 1
        if self.full > 0:
            self.full -= 1
            raise sqlite3.OperationalError("database or disk is full")
        await super().commit()


class Disks:
    """Journal.open's `connect`, keeping the connection it made."""

    def __call__(self, path: Path) -> Disk:
        self.made = Disk(path)
        return self.made


async def test_writes_are_committed_in_groups_and_durable_when_they_return(tmp_path):
    path = tmp_path / "state.sqlite3"
    disks = Disks()
    journal = await Journal.open(path, connect=disks)
    try:
        shas = [f"{n:064x}" for n in range(40)]
        for sha in shas:  # the intake's way: not waited for...
            await journal.enqueue(LOGIN, sha, tmp_path / f"{sha[-4:]}.pdf", "x.pdf", 1, wait=False)
        assert _rows(path, "queued") == 0
        assert (await journal.get(LOGIN, shas[0])) is not None  # ...yet seen by the next read
        # Answers recorded at once by several deliveries: each is on disk when its
        # call returns, and one commit serves many of them.
        await asyncio.gather(*(journal.record_imported(LOGIN, {sha: f"id-{sha[-4:]}"})
                               for sha in shas))
        assert _rows(path, "imported") == 40
        assert disks.made.commits < 40
    finally:
        await journal.close()


async def test_writes_not_waited_for_are_committed_promptly(tmp_path):
    path = tmp_path / "state.sqlite3"
    journal = await Journal.open(path)
    stopping = asyncio.Event()
    committer = asyncio.create_task(journal.keep_committed(stopping))
    try:
        await journal.enqueue(LOGIN, "ab" * 32, tmp_path / "a.pdf", "a.pdf", 1, wait=False)
        await wait_for(lambda: _rows(path, "queued") == 1, what="the queued row committed")
    finally:
        stopping.set()
        await committer
        await journal.close()


async def test_a_writer_cancelled_while_the_disk_is_full_loses_no_one_else_s_rows(tmp_path):
    path = tmp_path / "state.sqlite3"
    first, other = "1" * 64, "3" * 64
    journal = await Journal.open(path)
    for sha in (first, other):
        await journal.enqueue(LOGIN, sha, tmp_path / f"{sha[:4]}.pdf", "x.pdf", 1)
    await journal.close()
    disks = Disks()
    journal = await Journal.open(path, connect=disks)
    disks.made.full = 1  # the next commit is refused
    try:
        cancelled = asyncio.create_task(journal.record_imported(LOGIN, {first: "id-1"}))
        await asyncio.sleep(0)  # its statement runs; it waits for its commit
        waiting = asyncio.create_task(journal.record_imported(LOGIN, {other: "id-3"}))
        await wait_for(lambda: disks.made.full == 0, what="the full disk")
        cancelled.cancel()  # its task group gives up while the disk is full
        await asyncio.gather(cancelled, return_exceptions=True)
        await asyncio.wait_for(waiting, 10)
        # Told "committed": it must be so, for a file is moved into done/ next.
        with sqlite3.connect(path) as conn:
            rows = dict(conn.execute("SELECT sha256, invoice_id FROM invoices").fetchall())
        conn.close()
        assert rows[other] == "id-3"
    finally:
        await journal.close()


async def test_every_write_s_cursor_is_closed_in_sqlite_s_own_thread(tmp_path):
    """A cursor left to the garbage collector is finalised by the event loop's thread,
    which under load races SQLite's thread on a shared cached statement ("bad
    parameter or other API misuse"): the journal closes each one where it ran."""
    journal = await Journal.open(tmp_path / "state.sqlite3")
    try:
        await journal.enqueue(LOGIN, "ab" * 32, tmp_path / "a.pdf", "a.pdf", 1)
        cur = await journal.write("UPDATE invoices SET size = 2 WHERE sha256 = ?", ("ab" * 32,))
        assert cur.rowcount == 1
        with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
            await cur.fetchone()
    finally:
        await journal.close()


async def test_events_migrated_from_v3_are_not_logged_again_at_the_next_look(tmp_path, _logs):
    from daemon.config import EinvoicingConfig, UploadConfig
    from daemon.flow.einvoice import Einvoicing
    from daemon.flow.orgs import Org
    from daemon.journal.schema import MIGRATE_TO_2, MIGRATE_TO_3, statements

    db = tmp_path / "state.sqlite3"
    with sqlite3.connect(db) as conn:  # what the previous main wrote
        conn.executescript(SCHEMA_0_1_0)
        for statement in statements(MIGRATE_TO_2) + statements(MIGRATE_TO_3):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 3")
        conn.execute(
            "INSERT INTO einvoices (org, invoice_id, sha256, state, lifecycle, next_at, "
            "submitted_at, created_at, updated_at) VALUES (?, 'inv-1', ?, 'submitted', ?, 0, "
            "'2026-11-01T10:00:00+00:00', '2026-11-01T10:00:00.000+00:00', 't1')",
            (LOGIN, "cd" * 32, '[[200, "2026-11-01T10:05:00+00:00"], '
                               '[201, "2026-11-01T10:05:00+00:00"]]'),
        )
    conn.close()

    class Qonto:  # answers as Qonto does: its own times
        async def client_invoice(self, invoice_id: str) -> dict:
            return {"id": invoice_id, "einvoicing_status": "submitted",
                    "einvoicing_lifecycle_events": [
                        {"status_code": "200", "timestamp": "2026-11-01T10:00:01.5Z"},
                        {"status_code": "201", "timestamp": "2026-11-01T10:00:02.5Z"},
                        {"status_code": "202", "timestamp": "2026-11-01T10:03:00.0Z"}]}

    journal = await Journal.open(db)
    stopping = asyncio.Event()
    try:
        org = Org(LOGIN, Qonto(), journal, UploadConfig())
        einvoicing = Einvoicing(journal=journal, orgs={LOGIN: org}, settings=EinvoicingConfig(),
                                upload=UploadConfig(), stopping=stopping)
        task = asyncio.create_task(einvoicing.run())
        await wait_for(lambda: any(e["event"] == "einvoice_status_changed" for e in _logs),
                       what="the look after the upgrade")
        stopping.set()
        await asyncio.wait_for(task, 10)
        (e,) = await journal.einvoices_of(LOGIN, "cd" * 32)
    finally:
        stopping.set()
        await journal.close()
    assert [x.code for x in e.events] == [200, 201, 202]  # stored once each
    assert [x.at for x in e.events] == ["2026-11-01T10:00:01.5Z", "2026-11-01T10:00:02.5Z",
                                        "2026-11-01T10:03:00.0Z"]  # Qonto's own times
    assert [x["code"] for x in _logs if x["event"] == "einvoice_status_changed"] == [202]


async def test_a_journal_of_schema_4_gets_the_business_rules_column(tmp_path):
    """Schema 4 is what the previous main wrote: its rows stay, each invoice can now
    keep what the business rules said of it."""
    from daemon.journal import schema

    db = tmp_path / "state.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA_0_1_0)
        for script in (schema.MIGRATE_TO_2, schema.MIGRATE_TO_3, schema.MIGRATE_TO_4):
            for statement in schema.statements(script):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 4")
        conn.execute(
            "INSERT INTO invoices (org, sha256, state, invoice_id, path, file_name, size, "
            "attempts, created_at, updated_at, flavor, profile, invoice_number) VALUES "
            "(?, ?, 'done', 'inv-1', ?, 'a.pdf', 10, 1, 't0', 't1', 'factur-x', 'en16931', 'A-1')",
            (LOGIN, "cd" * 32, os.fsencode(tmp_path / "a.pdf")),
        )
    conn.close()
    journal = await Journal.open(db)
    try:
        old = await journal.get(LOGIN, "cd" * 32)
        assert old is not None and old.invoice_id == "inv-1" and old.rules is None
        assert old.facts is not None and old.facts["number"] == "A-1"
        from daemon.invoice_xml import Invoice

        report = '{"verdict": "failed", "fatal": ["BR-CO-10"]}'
        invoice = Invoice(attachment="factur-x.xml", flavor="factur-x", profile="en16931",
                          number="B-1", seller_key="fr1", rules=report)
        await journal.enqueue(LOGIN, "ef" * 32, tmp_path / "b.pdf", "b.pdf", 10, invoice)
        new = await journal.get(LOGIN, "ef" * 32)
        assert new is not None and new.rules == {"verdict": "failed", "fatal": ["BR-CO-10"]}
    finally:
        await journal.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    conn.close()


async def test_a_new_journal_is_private_to_the_daemon_s_user(tmp_path):
    old = os.umask(0o022)  # a shell's usual umask, outside systemd
    try:
        db = tmp_path / "state" / "journal.sqlite3"
        journal = await Journal.open(db)
        await journal.close()
    finally:
        os.umask(old)
    assert db.stat().st_mode & 0o777 == 0o600
    assert db.parent.stat().st_mode & 0o777 == 0o700
    for extra in db.parent.glob("journal.sqlite3-*"):
        assert extra.stat().st_mode & 0o077 == 0, extra


async def test_a_journal_others_can_read_is_said_at_start(ws, qonto, start, _logs):
    _, url = qonto
    ws.db.parent.mkdir(parents=True)
    journal = await Journal.open(ws.db)
    await journal.close()
    ws.db.chmod(0o644)
    running = await start(ws.config(url))
    await wait_for(lambda: events(_logs, "daemon_started"), what="the start")
    await wait_for(lambda: any("can be read by its group or by others" in e.get("detail", "")
                               for e in events(_logs, "config_warning")), what="the warning")
    assert await running.stop() == 0


@pytest.mark.parametrize("companion", ["-wal", "-shm"])
async def test_its_wal_or_shm_deleted_under_the_daemon_is_a_lost_journal(
    ws, qonto, start, _logs, companion
):
    _, url = qonto
    running = await start(ws.config(url))
    ws.invoice("a.pdf")
    await wait_for(lambda: "a.pdf" in names(ws.done), what="a.pdf imported")
    side = ws.db.with_name(ws.db.name + companion)
    assert side.exists()  # from the moment the journal is open
    side.unlink()
    await wait_for(lambda: events(_logs, "journal_lost"), what="journal_lost")
    assert await asyncio.wait_for(running.task, 30) == 1
