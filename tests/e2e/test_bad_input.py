"""Bad input to the commands: one line naming what is wrong and an exit status,
never a traceback, never a hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import Workspace, run_cli, to_toml

EX_CONFIG = 78


def write(ws: Workspace, raw: dict, name: str = "config.toml") -> Path:
    path = ws.root / name
    path.write_text(to_toml(raw), encoding="utf-8")
    return path


def clean(code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err, err


async def test_a_configuration_that_cannot_be_read_is_exit_78(ws: Workspace):
    good = write(ws, ws.config_dict("http://127.0.0.1:9"))
    latin1 = ws.root / "latin1.toml"
    latin1.write_bytes(good.read_bytes() + "# café\n".encode("latin-1"))
    fifo = ws.root / "fifo.toml"
    os.mkfifo(fifo)
    raw = ws.config_dict("http://127.0.0.1:9")
    raw["database"]["path"] = "state\x00.sqlite3"
    nul = write(ws, raw, "nul.toml")
    for path, said in ((latin1, "not UTF-8"), (fifo, "not a regular file"),
                       (nul, "NUL")):
        for command in ("check-config", "status", "run"):
            code, out, err = await run_cli(command, "--config", str(path), timeout_s=30)
            clean(code, out, err)
            assert code == EX_CONFIG, (command, path, err)
            assert said in out + err, (command, path)


@pytest.mark.parametrize("kind", ["not a database", "a directory"])
async def test_status_and_lookup_on_a_journal_they_cannot_use(ws: Workspace, kind):
    toml = write(ws, ws.config_dict("http://127.0.0.1:9"))
    ws.db.parent.mkdir(parents=True, exist_ok=True)
    if kind == "a directory":
        ws.db.mkdir()
    else:
        ws.db.write_text("this is not a database\n")
    for argv in (("status",), ("lookup", str(toml))):
        code, out, err = await run_cli(*argv, "--config", str(toml), timeout_s=30)
        clean(code, out, err)
        assert code == EX_CONFIG, (argv, err)
        assert "free space" not in err
        assert ("not a file" if kind == "a directory" else "not a usable journal") in err


async def test_retry_names_what_is_not_a_regular_file_and_moves_the_rest(ws: Workspace):
    toml = write(ws, ws.config_dict("http://127.0.0.1:9"))
    ws.failed.mkdir()
    (ws.failed / "dir.pdf").mkdir()
    os.mkfifo(ws.failed / "pipe.pdf")
    (ws.failed / "link.pdf").symlink_to("/etc/hostname")
    (ws.failed / "real.pdf").write_bytes(b"%PDF-1.7\n%%EOF\n")
    (ws.failed / "real.pdf.error.json").write_text("{}")
    for name in ("dir.pdf", "pipe.pdf", "link.pdf"):
        code, out, err = await run_cli("retry", "--config", str(toml), str(ws.failed / name))
        clean(code, out, err)
        assert code == 1 and "not a regular file" in err, (name, err)
    code, out, err = await run_cli("retry", "--config", str(toml), "--all")
    clean(code, out, err)
    assert code == 1 and err.count("not a regular file") == 3
    assert (ws.inbox / "real.pdf").exists() and "real.pdf" in out  # the rest was moved
    assert {p.name for p in ws.failed.iterdir()} == {"dir.pdf", "pipe.pdf", "link.pdf"}


async def test_status_shows_a_name_that_is_not_utf8_as_its_bytes(ws: Workspace):
    toml = write(ws, ws.config_dict("http://127.0.0.1:9"))
    (ws.inbox / os.fsdecode(b"caf\xe9.pdf")).write_bytes(b"%PDF-1.7\n")
    code, out, err = await run_cli("status", "--json", "--config", str(toml))
    clean(code, out, err)
    shown = json.loads(out.encode("utf-8"))  # valid UTF-8 JSON
    assert shown["folders"][0]["oldest_waiting"].endswith("caf\\xe9.pdf")
    code, out, err = await run_cli("status", "--config", str(toml))
    clean(code, out, err)
    assert "caf\\xe9.pdf" in out
