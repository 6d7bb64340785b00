"""Freed file buffers go back to the system: RSS follows what the daemon holds."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc"
    or not os.path.exists("/proc/self/status")
    or sys.maxsize < 2**32,
    reason="64-bit glibc's malloc on Linux",
)

# Four threads each read 4.9 MB files, three alive at a time, after one larger
# buffer was freed (a pickle's, in the daemon). Prints the MiB still resident
# once everything is freed. With glibc's default, about 70 MiB stay.
SCRIPT = """
import os, sys, threading
from daemon.malloc import return_large_buffers

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

print(return_large_buffers())
base = rss_kib()

def work():
    big = os.urandom(10_000_000)
    del big
    kept = []
    for _ in range(40):
        kept.append(os.urandom(4_900_000))
        if len(kept) > 3:
            kept.pop(0)
    kept.clear()

threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print((rss_kib() - base) // 1024)
"""


def run(**env: str) -> tuple[bool, int]:
    """(threshold applied, MiB still resident) in a fresh interpreter."""
    environ = {k: v for k, v in os.environ.items() if "MALLOC" not in k and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True,
        env={**environ, **env},
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_buffers_of_files_read_in_threads_are_returned_when_freed():
    applied, retained_mib = run()
    assert applied
    assert retained_mib < 10


def test_a_threshold_the_administrator_chose_is_kept():
    applied, _ = run(MALLOC_MMAP_THRESHOLD_="65536")
    assert not applied
