"""The daemon's speed and memory, measured the way it runs in production.

    .venv/bin/python bench/run.py            # every scenario (about 10 minutes)
    .venv/bin/python bench/run.py --quick    # small sizes, a short idle window

The real daemon process (the installed `qonto-invoice-daemon` script) runs
against the emulator, itself a separate process on loopback that answers
after a configurable latency. Figures come from outside both: the emulator's
log of requests (arrival time, files), the folders, /proc. The table shows
each target beside its figure; the same figures go to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import concurrent.futures
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.flow import examine as inspect  # noqa: E402
from daemon.qonto import FIELD  # noqa: E402
from daemon.testing import samples  # noqa: E402

LOGIN, SECRET = "bench-org", "bench-secret-key"
SCRIPT = Path(sys.executable).with_name("qonto-invoice-daemon")
MB = 1_000_000


# -- results ---------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    figure: str
    value: float | None
    unit: str = ""
    target: str = ""
    met: bool | None = None  # None: no target, a figure to read


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        shown = "" if row.value is None else f"{row.value:g} {row.unit}".strip()
        print(f"  {row.scenario}: {row.figure} = {shown}  {row.target}", flush=True)
        return row

    def table(self) -> str:
        head = ("scenario", "figure", "value", "target", "")
        lines = [head] + [
            (
                r.scenario, r.figure,
                "n/a" if r.value is None else f"{r.value:g} {r.unit}".strip(),
                r.target, {True: "ok", False: "MISSED", None: ""}[r.met],
            )
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        out = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
               for line in lines]
        out.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(out)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
        "kernel": platform.release(), "date": time.strftime("%Y-%m-%d"),
    }


# -- invoices --------------------------------------------------------------------------


def _make_batch(args: tuple[Path, int, int]) -> None:
    from facturx import generate_from_binary

    folder, start, stop = args
    base = samples.plain_pdf(["Invoice", "Factur-X MINIMUM"])
    for n in range(start, stop):
        xml = samples.facturx_xml(f"BENCH-{n:07d}", 10000 + n)
        data = generate_from_binary(base, xml, check_xsd=False)
        (folder / f"invoice-{n:07d}.pdf").write_bytes(data)


def corpus(cache: Path, count: int) -> list[Path]:
    """`count` distinct small Factur-X PDFs, made once and kept in `cache`."""
    folder = cache / "facturx"
    folder.mkdir(parents=True, exist_ok=True)
    have = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    missing = [n for n in range(count) if f"invoice-{n:07d}.pdf" not in have]
    if missing:
        print(f"making {len(missing)} Factur-X invoices (kept for the next run)...", flush=True)
        step = 500
        chunks = [(folder, s, min(s + step, count)) for s in range(missing[0], count, step)]
        with concurrent.futures.ProcessPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(_make_batch, chunks))
    return [folder / f"invoice-{n:07d}.pdf" for n in range(count)]


def place(files: Sequence[Path], inboxes: Sequence[Path]) -> None:
    """Hard links (or copies) spread over the inboxes, as an export leaves them."""
    for i, src in enumerate(files):
        dest = inboxes[i % len(inboxes)] / src.name
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)


def _make_scans(args: tuple[Path, list[int], int]) -> None:
    from facturx import generate_from_binary

    folder, numbers, padding = args
    for n in numbers:
        number = f"SCAN-{n:06d}"
        base = samples.plain_pdf([f"Invoice {number}", "scanned"], padding_bytes=padding)
        data = generate_from_binary(base, samples.facturx_xml(number, 10000 + n), check_xsd=False)
        tmp = folder / f".scan-{n:03d}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / f"scan-{n:03d}.pdf")


def big_pdfs(folder: Path, count: int, size: int) -> list[Path]:
    """`count` distinct Factur-X PDFs of just under `size` bytes, the weight of a
    scanned invoice (random hex in an unused object stands for the image: pypdf
    never reads it, as it would not decode an image); made once, kept."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"scan-{n:03d}.pdf" for n in range(count)]
    missing = [
        n for n, p in enumerate(paths)
        if not p.exists() or not size - 50_000 <= p.stat().st_size <= size
    ]
    if missing:
        print(f"making {len(missing)} Factur-X PDFs of {size:,} bytes (kept)...", flush=True)
        # The framing around the noise does not depend on it: one probe sizes them all.
        probe = folder / ".probe"
        probe.mkdir(exist_ok=True)
        _make_scans((probe, [0], size - 50_000))
        made = (probe / "scan-000.pdf").stat().st_size
        shutil.rmtree(probe)
        padding = size - 50_000 + (size - 1_000 - made)
        cpus = os.cpu_count() or 1
        chunks = [(folder, missing[i::cpus], padding) for i in range(cpus) if missing[i::cpus]]
        with concurrent.futures.ProcessPoolExecutor(cpus) as pool:
            list(pool.map(_make_scans, chunks))
    return paths


# -- the emulator and the daemon, as processes -----------------------------------------


class Server:
    """`python -m daemon.testing.emulator` on loopback, a port of its own."""

    def __init__(self, latency_s: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.testing.emulator", "--port", "0", "--login", LOGIN,
             "--secret", SECRET, "--latency-ms", str(latency_s * 1000)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        self.latency_s = latency_s
        if not self.url.startswith("http://"):
            raise RuntimeError("the emulator did not start")
        self.log: list[tuple[float, int, list[str]]] = []

    def poll(self) -> list[tuple[float, int, list[str]]]:
        """Requests logged since the last poll (the emulator keeps them all)."""
        with urllib.request.urlopen(f"{self.url}/_emulator/requests?since={len(self.log)}") as r:
            new = [(float(t), int(status), list(names))
                   for t, status, names in json.load(r)["requests"]]
        self.log.extend(new)
        return new

    def imported(self) -> set[str]:
        return {n for _, status, names in self.log if status == 200 for n in names}

    def wait_imported(self, files: Sequence[Path], timeout_s: float) -> None:
        want = {f.name for f in files}

        def all_sent() -> bool:
            self.poll()
            return want <= self.imported()

        wait_until(all_sent, timeout_s=timeout_s, every_s=0.25)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


class Daemon:
    """`qonto-invoice-daemon run` with its own journal, ready when it says READY=1."""

    def __init__(self, work: Path, url: str, folders: Sequence[Path], **sections: Any) -> None:
        self.work = work
        config = {
            "qonto": {"base_url": url, "login": LOGIN, "secret_key_env": "QONTO_SECRET_KEY"},
            "database": {"path": str(work / "state.sqlite3")},
            "log": {"format": "json", "heartbeat_seconds": 3600.0},
            **sections,
        }
        text = _toml(config) + "".join(
            f'\n[[folders]]\ninbox = "{f}"\ndone = "{f}/done"\nfailed = "{f}/failed"\n'
            for f in folders
        )
        self.config = work / "config.toml"
        self.config.write_text(text)
        self.notify_path = work / "notify.sock"
        self.notify_path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.log_path = work / "daemon.log"
        self.started_at = 0.0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        env = {**os.environ, "QONTO_SECRET_KEY": SECRET, "NOTIFY_SOCKET": str(self.notify_path)}
        with self.log_path.open("ab") as log:
            self.started_at = time.time()
            self.proc = subprocess.Popen(
                [str(SCRIPT), "run", "--config", str(self.config)],
                env=env, stdout=log, stderr=log,
            )
        return self.started_at

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        self.notify.settimeout(timeout_s)
        while True:
            if b"READY=1" in self.notify.recv(4096):
                return

    def pids(self) -> list[int]:
        """The daemon and its parser processes."""
        assert self.proc is not None
        family, found = {self.proc.pid}, True
        while found:
            found = False
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) in family:
                    continue
                with contextlib.suppress(OSError, IndexError, ValueError):
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    if ppid in family:
                        family.add(int(entry.name))
                        found = True
        return sorted(family)

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        return _status_kb(self.proc.pid, "VmHWM") / 1000

    def rss_mb(self) -> float:
        assert self.proc is not None
        return _status_kb(self.proc.pid, "VmRSS") / 1000

    def cpu_s(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        self.notify_path.unlink(missing_ok=True)


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _toml(config: dict[str, Any]) -> str:
    out = []
    for section, keys in config.items():
        out.append(f"[{section}]")
        for key, value in keys.items():
            out.append(f"{key} = {json.dumps(value)}")  # strings, numbers, booleans
        out.append("")
    return "\n".join(out)


@contextlib.contextmanager
def running(work: Path, latency_s: float, folders: Sequence[Path],
            **sections: Any) -> Iterator[tuple[Server, Daemon]]:
    server = Server(latency_s)
    daemon = Daemon(work, server.url, folders, **sections)
    try:
        yield server, daemon
    finally:
        daemon.stop()
        server.close()


def _sections(args: argparse.Namespace) -> dict[str, Any]:
    return {"watch": {"settle_seconds": args.settle}, "upload": {"concurrency": args.concurrency}}


def fresh(work: Path, name: str, inboxes: int) -> tuple[Path, list[Path]]:
    here = work / name
    shutil.rmtree(here, ignore_errors=True)
    folders = [here / f"inbox-{i}" for i in range(inboxes)]
    for f in folders:
        (f / "done").mkdir(parents=True)
    return here, folders


def in_done(folders: Sequence[Path]) -> int:
    return sum(1 for f in folders for e in os.scandir(f / "done") if not e.name.startswith("."))


def last_filed(folders: Sequence[Path]) -> float:
    """When the last file reached done/: the ctime its link and unlink left (the
    kernel's clock, exact, where polling the folders would add up to a poll's wait)."""
    return max(
        e.stat(follow_symlinks=False).st_ctime
        for f in folders for e in os.scandir(f / "done") if not e.name.startswith(".")
    )


def wait_until(check: Any, timeout_s: float, every_s: float = 0.05) -> float:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon did not finish in time")
        time.sleep(every_s)
    return time.time()


# -- scenarios -------------------------------------------------------------------------


@dataclass
class Drain:
    files: int
    seconds: float
    requests: int
    files_per_request: float
    first_request_s: float
    peak_rss_mb: float


def drain(work: Path, files: Sequence[Path], args: argparse.Namespace, name: str,
          *, keep: bool = False) -> tuple[Drain, Path]:
    here, folders = fresh(work, name, 2)
    place(files, folders)
    sections = _sections(args)
    with running(here, args.latency_ms / 1000, folders, **sections) as (server, daemon):
        t0 = daemon.start()
        server.wait_imported(files, timeout_s=max(600.0, len(files) / 10))
        wait_until(lambda: in_done(folders) >= len(files), timeout_s=600.0)
        # Never before the last answer (a filesystem with coarse timestamps).
        last_answer = max(t for t, status, _ in server.log if status == 200) + server.latency_s
        end = max(last_filed(folders), last_answer)
        ok = [(t, names) for t, status, names in server.log if status == 200]
        result = Drain(
            files=len(files), seconds=end - t0, requests=len(ok),
            files_per_request=sum(len(n) for _, n in ok) / len(ok),
            first_request_s=server.log[0][0] - t0, peak_rss_mb=daemon.peak_rss_mb(),
        )
    return result, here


def restart_first_request(here: Path, files: Sequence[Path], args: argparse.Namespace) -> float:
    """Start again over the journal of a finished drain, with a new backlog."""
    folders = sorted(p for p in here.iterdir() if p.name.startswith("inbox-"))
    place(files, folders)
    sections = _sections(args)
    with running(here, args.latency_ms / 1000, folders, **sections) as (server, daemon):
        t0 = daemon.start()
        wait_until(lambda: bool(server.poll()) or bool(server.log), timeout_s=120, every_s=0.02)
        return server.log[0][0] - t0


def one_request_per_file(files: Sequence[Path], latency_s: float) -> tuple[float, str]:
    """Files per second of a loop that posts each file alone: what a cron job with curl
    does (curl itself when installed, else a new aiohttp session per file)."""
    server = Server(latency_s)
    try:
        curl = shutil.which("curl")
        started = time.monotonic()
        if curl is not None:
            for path in files:
                subprocess.run(
                    [curl, "-sSf", "-o", "/dev/null", "-H", f"Authorization: {LOGIN}:{SECRET}",
                     "-F", f"{FIELD}=@{path};type=application/pdf",
                     f"{server.url}/v2/client_invoices/bulk"],
                    check=True,
                )
            how = "curl"
        else:
            asyncio.run(_python_loop(server.url, files))
            how = "aiohttp"
        return len(files) / (time.monotonic() - started), how
    finally:
        server.close()


async def _python_loop(url: str, files: Sequence[Path]) -> None:
    import aiohttp

    from daemon import qonto

    for path in files:
        # A new connection each time, as a new curl process would open.
        async with aiohttp.ClientSession() as session:
            body = qonto.build_body([qonto.Upload(path.name, path.read_bytes(),
                                                  "application/pdf")])
            async with session.post(f"{url}/v2/client_invoices/bulk", data=body,
                                    headers={"Authorization": f"{LOGIN}:{SECRET}"}) as r:
                r.raise_for_status()
                await r.read()


def pickup(work: Path, files: Sequence[Path], args: argparse.Namespace) -> list[float]:
    """An idle daemon; files renamed into the inbox one at a time; rename -> request."""
    here, folders = fresh(work, "pickup", 1)
    stage = here / "stage"
    stage.mkdir()
    for f in files:
        shutil.copyfile(f, stage / f.name)
    sections = _sections(args)
    rng = random.Random(9)
    renamed: dict[str, float] = {}
    with running(here, args.latency_ms / 1000, folders, **sections) as (server, daemon):
        daemon.start()
        daemon.wait_ready()
        time.sleep(1.0)  # idle: the start-up scan is over
        for f in files:
            time.sleep(rng.uniform(0.2, 0.8))
            renamed[f.name] = time.time()
            os.rename(stage / f.name, folders[0] / f.name)
        server.wait_imported(files, timeout_s=120)
        first_seen: dict[str, float] = {}
        for t, _, names in server.log:
            for n in names:
                first_seen.setdefault(n, t)
    return sorted(first_seen[n] - renamed[n] for n in renamed)


@dataclass
class Big:
    idle_mb: float
    peak_mb: float
    files_per_request: int  # the most in one request: 15 MB a request allows three
    in_flight_mb: float


def big_batches(work: Path, args: argparse.Namespace) -> Big:
    """Peak RSS above the idle daemon's while sending 4.9 MB Factur-X PDFs."""
    here, folders = fresh(work, "big", 1)
    files = big_pdfs(work / "cache" / "scans", args.big_files, 4_900_000)
    sections = _sections(args)
    with running(here, args.latency_ms / 1000, folders, **sections) as (server, daemon):
        daemon.start()
        daemon.wait_ready()
        idle_mb = daemon.rss_mb()
        place(files, folders)
        server.wait_imported(files, timeout_s=600)
        wait_until(lambda: in_done(folders) >= len(files), timeout_s=120)
        peak_mb = daemon.peak_rss_mb()
    per_request = max(len(names) for _, status, names in server.log if status == 200)
    file_mb = max(f.stat().st_size for f in files) / MB
    # The requests in flight, and one more read and waiting for the next free slot.
    in_flight_mb = (args.concurrency + 1) * per_request * file_mb
    return Big(idle_mb, peak_mb, per_request, in_flight_mb)


def idle_cpu(work: Path, args: argparse.Namespace, *, polling: bool) -> float:
    here, folders = fresh(work, "idle-polling" if polling else "idle", 3)
    sections = {"watch": {"settle_seconds": args.settle, "force_polling": polling,
                          "poll_delay_ms": 1000}}
    with running(here, args.latency_ms / 1000, folders, **sections) as (_, daemon):
        daemon.start()
        daemon.wait_ready()
        time.sleep(2.0)
        cpu0, t0 = daemon.cpu_s(), time.monotonic()
        time.sleep(args.idle_seconds)
        return 100 * (daemon.cpu_s() - cpu0) / (time.monotonic() - t0)


def hashing(work: Path, count: int) -> tuple[float, float]:
    """MB/s of sha256sum and of the daemon's read + inspection over the same 4.9 MB files."""
    files = big_pdfs(work / "cache" / "scans", count, 4_900_000)
    total_mb = sum(f.stat().st_size for f in files) / MB
    for f in files:  # both measured from the page cache
        f.read_bytes()
    started = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
    tool = total_mb / (time.perf_counter() - started)
    started = time.perf_counter()
    for f in files:
        content = inspect.read_regular(f, 5 * MB)
        inspect.examine(content, f.name, 5 * MB, 5 * MB)
    ours = total_mb / (time.perf_counter() - started)
    return tool, ours


def request_rate(work: Path, files: Sequence[Path], args: argparse.Namespace) -> tuple[int, int]:
    """A 1 ms server: the most requests in any 10 s window, and in all."""
    here, folders = fresh(work, "rate", 2)
    place(files, folders)
    sections = _sections(args)
    with running(here, 0.001, folders, **sections) as (server, daemon):
        daemon.start()
        server.wait_imported(files, timeout_s=900)
        times = sorted(t for t, _, _ in server.log)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 10.0:
            start += 1
        most = max(most, end - start + 1)
    return most, len(times)


# -- the run ---------------------------------------------------------------------------


# -- business rules ---------------------------------------------------------------------

SHARED_CORPUS = ROOT.parent / "shared" / "corpus"


@dataclass
class Rules:
    source: str
    cold_start_s: float
    per_worker: float  # invoices per second, one worker
    two_workers: float  # invoices per second, two workers
    worker_rss_mb: float  # the largest worker's peak RSS


def _en16931_samples() -> tuple[list[tuple[bytes, str | None, str | None]], str]:
    """The EN16931 invoices of the shared corpus (else generated ones): (xml, profile,
    seller country)."""
    from daemon.invoice_xml import read_invoice

    found: list[tuple[bytes, str | None, str | None]] = []
    if SHARED_CORPUS.is_dir():
        for pdf in sorted(SHARED_CORPUS.glob("*.pdf")):
            try:
                invoice = read_invoice(pdf.read_bytes(), keep_xml=True)
            except Exception:
                continue
            if invoice.xml is not None and invoice.profile == "en16931":
                found.append((invoice.xml, invoice.profile, invoice.seller_country))
    if found:
        return found, f"{len(found)} EN16931 invoices of the shared corpus"
    made: list[tuple[bytes, str | None, str | None]] = [
        (samples.facturx_xml(f"B-{i}", 1000 + i), "en16931", "FR") for i in range(8)
    ]
    return made, "8 generated EN16931 invoices"


def rules_speed(count: int) -> Rules:
    from daemon.validator import RulesPool

    invoices, source = _en16931_samples()

    async def run(workers: int) -> tuple[float, float, float]:
        pool = RulesPool(workers, 60.0, 1024, 300.0)
        stopping = asyncio.Event()
        try:
            started = time.perf_counter()
            # Cold: start every worker and compile the rules (in parallel).
            await asyncio.gather(*(pool.check(*invoices[i % len(invoices)], stopping)
                                   for i in range(workers)))
            cold = time.perf_counter() - started
            started = time.perf_counter()
            reports = await asyncio.gather(*(pool.check(*invoices[i % len(invoices)], stopping)
                                             for i in range(count)))
            rate = count / (time.perf_counter() - started)
            assert all(r is not None and r.unknown is None for r in reports), reports[:1]
            rss = max(_status_kb(pid, "VmHWM") for pid in pool.pids()) / 1024
            return cold, rate, rss
        finally:
            pool.close()

    cold, one, rss_one = asyncio.run(run(1))
    _, two, rss_two = asyncio.run(run(2))
    return Rules(source, cold, one, two, max(rss_one, rss_two))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000",
                        help="backlog sizes, comma-separated (default 2000,20000)")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--settle", type=float, default=1.0, help="settle_seconds")
    parser.add_argument("--pickup-files", type=int, default=50)
    parser.add_argument("--big-files", type=int, default=60, help="4.9 MB files for memory")
    parser.add_argument("--rate-files", type=int, default=6000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 200 files, small samples, 5 s idle windows")
    parser.add_argument("--only", default="",
                        help="scenarios to run, comma-separated: drain,loop,pickup,memory,"
                             "startup,idle,hashing,rate,rules (default all)")
    parser.add_argument("--rules-invoices", type=int, default=400,
                        help="invoices checked for the business-rules figures")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/qonto-invoice-daemon-bench"),
                        help="scratch space; the generated invoices are kept here")
    parser.add_argument("--json", type=Path, default=None,
                        help="where the figures go (default WORK/results.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.pickup_files, args.big_files = "200", 10, 10
        args.rate_files, args.idle_seconds, args.rules_invoices = 400, 5.0, 60
    if not SCRIPT.exists():
        parser.error(f"{SCRIPT} is missing: install the project into this interpreter first")
    # Byte-compiled, as `pip install .` leaves it: an editable install under
    # PYTHONDONTWRITEBYTECODE would compile every module at each start (60 ms).
    compileall.compile_dir(ROOT / "daemon", quiet=1)
    only = set(filter(None, args.only.split(","))) or {
        "drain", "loop", "pickup", "memory", "startup", "idle", "hashing", "rate", "rules"}
    sizes = [int(s) for s in args.sizes.split(",")]
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    big = max(sizes)
    need = sum(sizes) + 2000 * ("startup" in only) + args.pickup_files * ("pickup" in only)
    pool = corpus(work / "cache", need + args.rate_files * ("rate" in only))

    report = Report(machine(), {k: str(v) for k, v in vars(args).items()})
    print(f"machine: {report.machine}", flush=True)
    drains: dict[int, Drain] = {}
    offset = 0
    big_run: Path | None = None
    for n in sizes:
        files, offset = pool[offset:offset + n], offset + n
        if "drain" not in only and not ("startup" in only and n == big):
            continue
        d, here = drain(work, files, args, f"drain-{n}")
        drains[n] = d
        ideal = args.settle + math.ceil(n / 5) * (args.latency_ms / 1000) / args.concurrency
        ratio = d.seconds / ideal
        tag = f"1 drain {n}"
        report.add(tag, "drain / ideal", round(ratio, 3), "", "<= 1.10", ratio <= 1.10)
        report.add(tag, "drain time", round(d.seconds, 2), "s", f"ideal {ideal:g} s")
        report.add(tag, "files per request", round(d.files_per_request, 3), "", ">= 4.9",
                   d.files_per_request >= 4.9)
        report.add(tag, "peak RSS", round(d.peak_rss_mb, 1), "MB",
                   "<= 120 MB" if n >= 20000 else "", d.peak_rss_mb <= 120 if n >= 20000 else None)
        if n == big:
            report.add("5 start-up", f"first request, {n} waiting", round(d.first_request_s, 2),
                       "s", "<= 2 s", d.first_request_s <= 2.0)
            big_run = here
    if "startup" in only and big_run is not None:
        extra = pool[offset:offset + 2000]
        offset += 2000
        first = restart_first_request(big_run, extra, args)
        report.add("5 start-up", f"first request, restart over {big} done rows",
                   round(first, 2), "s", "<= 2 s", first <= 2.0)
    if "loop" in only and drains:
        sample = pool[:min(100, len(pool))]
        loop_rate, how = one_request_per_file(sample, args.latency_ms / 1000)
        report.add("2 one request per file", f"loop rate ({how}, one file each)",
                   round(loop_rate, 2), "files/s")
        for n, d in drains.items():
            ratio = (n / d.seconds) / loop_rate
            report.add("2 one request per file", f"daemon / loop, {n} files", round(ratio, 1),
                       "x", ">= 18x", ratio >= 18)
    if "pickup" in only:
        files = pool[offset:offset + args.pickup_files]
        offset += args.pickup_files
        delays = pickup(work, files, args)
        p50 = statistics.median(delays)
        p95 = delays[max(0, math.ceil(0.95 * len(delays)) - 1)]
        bound = args.settle + 0.3
        report.add("3 pickup of a lone file", "p50", round(p50, 3), "s")
        report.add("3 pickup of a lone file", "p95", round(p95, 3), "s",
                   f"<= settle + 0.3 = {bound:g} s", p95 <= bound)
    if "memory" in only:
        heavy = big_batches(work, args)
        above = heavy.peak_mb - heavy.idle_mb
        tag = "4 memory, 4.9 MB files"
        report.add(tag, "idle RSS", round(heavy.idle_mb, 1), "MB")
        report.add(tag, "files per request (15 MB a request)", heavy.files_per_request, "")
        # The constant: the intake's reads (parse_workers + 2 files of <= 5 MB, each
        # also pickled for a parser process) and the HTTP buffers.
        bound = heavy.in_flight_mb + 50
        report.add(tag, "peak RSS above idle", round(above, 1), "MB",
                   f"<= read for requests {heavy.in_flight_mb:.1f} + 50 MB", above <= bound)
    if "idle" in only:
        for polling, limit in ((False, 0.5), (True, 2.0)):
            cpu = idle_cpu(work, args, polling=polling)
            how = "force_polling, 1000 ms" if polling else "inotify"
            report.add("6 idle, 3 folders", f"CPU, {how}", round(cpu, 2), "%",
                       f"<= {limit:g} %", cpu <= limit)
    if "hashing" in only:
        tool, ours = hashing(work, 20 if not args.quick else 4)
        report.add("7 hashing 4.9 MB files", "sha256sum", round(tool, 1), "MB/s")
        report.add("7 hashing 4.9 MB files", "daemon read + inspect", round(ours, 1), "MB/s",
                   ">= 70 % of sha256sum", ours >= 0.7 * tool)
    if "rate" in only:
        files = pool[offset:offset + args.rate_files]
        most, total = request_rate(work, files, args)
        report.add("8 rate limit, 1 ms server", "most requests in 10 s", most, "",
                   "<= 1000", most <= 1000)
        report.add("8 rate limit, 1 ms server", "requests", total, "")

    if "rules" in only:
        rules = rules_speed(args.rules_invoices)
        tag = "9 business rules"
        report.add(tag, f"cold start (Saxon, rules compiled; {rules.source})",
                   round(rules.cold_start_s, 2), "s")
        report.add(tag, "invoices per second, one worker", round(rules.per_worker, 1), "/s")
        report.add(tag, "invoices per second, two workers", round(rules.two_workers, 1), "/s",
                   ">= 25 /s", rules.two_workers >= 25)
        report.add(tag, "peak RSS of a worker", round(rules.worker_rss_mb, 1), "MB")

    print()
    print(f"{report.machine['cpus']} CPUs, {report.machine['cpu']}, Python "
          f"{report.machine['python']}, latency {args.latency_ms:g} ms, "
          f"concurrency {args.concurrency}, settle {args.settle:g} s")
    print(report.table())
    out = args.json or work / "results.json"
    out.write_text(json.dumps(
        {"machine": report.machine, "settings": report.settings,
         "rows": [asdict(r) for r in report.rows]}, indent=2) + "\n")
    print(f"\nfigures written to {out}")
    return 0 if all(r.met is not False for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
