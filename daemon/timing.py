"""The daemon's clock and its internal intervals, injectable so tests need not wait them out.

What a person may tune is in the configuration; these are the daemon's own
rhythms. The defaults are what `run` uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
MONOTONIC: Clock = time.monotonic


@dataclass(frozen=True)
class Intervals:
    journal_check_s: float = 5.0  # is the journal file still the one we write to?
    status_s: float = 5.0  # STATUS= for `systemctl status`
    rescan_gap_s: float = 1.0  # full listings asked back to back stay this far apart
    watcher_start_s: float = 1.0  # the first listing waits this long for the watcher
    parser_retry_s: float = 30.0  # a file waits this long when no parser can start
    rules_retry_s: float = 600.0  # a file the rules could not judge, held: looked at again
    einvoice_recheck_s: float = 30.0  # the journal is read again (`retry --einvoice`)
    einvoice_paused_s: float = 5.0  # while an organization is paused
    idle_poll_s: float = 0.05  # `run --once`: how often it looks for the end


DEFAULT = Intervals()
