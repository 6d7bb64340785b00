"""The books: the files in hand, the one way out, and the one set of counters."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.flow.books import Books, Why
from daemon.flow.records import Outcome
from daemon.flow.settle import Settler, Unfinished
from daemon.identity import Identity, Seen

ID = Identity(1, 2, 3, 4, 5)
A, B, C = Path("/in/a.pdf"), Path("/in/b.pdf"), Path("/in/c.pdf")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts() -> tuple[Books, Settler, Unfinished, Clock]:
    clock = Clock()
    settler = Settler(settle_s=1.0, unstable_warning_s=600.0)
    unfinished = Unfinished(fail_s=600.0, recheck_s=1.0)
    return Books(settler, unfinished, clock), settler, unfinished, clock


def test_a_file_seen_twice_is_in_hand_once(parts):
    books, settler, _, clock = parts
    books.consider(Seen(A, ID), clock())
    books.consider(Seen(A, ID), clock())
    assert A in books and len(books) == 1 and A in settler


@pytest.mark.parametrize(("outcome", "counted"), [
    (Outcome.IMPORTED, "imported"), (Outcome.DUPLICATE, "duplicates"),
    (Outcome.FAILED, "failed"), (Outcome.LEFT, "left"),
])
def test_each_outcome_is_counted_once_and_the_file_leaves(parts, outcome, counted):
    books, settler, _, clock = parts
    books.consider(Seen(A, ID), clock())
    books.finish(A, outcome)
    books.finish(A, outcome)  # a second report of the same file counts nothing
    assert A not in books and A not in settler and books.idle
    assert getattr(books.counts, counted) == 1
    others = {"imported", "duplicates", "failed", "left"} - {counted}
    assert all(getattr(books.counts, name) == 0 for name in others)


@pytest.mark.parametrize("outcome", [Outcome.KEPT, Outcome.GONE])
def test_kept_and_gone_files_leave_uncounted(parts, outcome):
    books, _, _, clock = parts
    books.consider(Seen(A, ID), clock())
    books.finish(A, outcome)
    assert books.idle and books.counts.done == books.counts.failed == books.counts.left == 0


def test_done_counts_imports_and_duplicates(parts):
    books, _, _, clock = parts
    for path in (A, B):
        books.consider(Seen(path, ID), clock())
    books.finish(A, Outcome.IMPORTED)
    books.finish(B, Outcome.DUPLICATE)
    assert books.counts.done == 2


def test_a_changed_file_stays_in_hand_and_settles_again(parts):
    books, settler, _, clock = parts
    books.consider(Seen(A, ID), clock())
    settler.settled(clock() + 5)  # handed to the intake
    assert A not in settler
    books.finish(A, Outcome.CHANGED)
    assert A in books and A in settler  # followed again from a fresh stat
    assert books.counts == type(books.counts)()


def test_twins_are_looked_at_again_when_the_first_is_done(parts):
    books, settler, _, clock = parts
    for path in (A, B, C):
        books.consider(Seen(path, ID), clock())
    settler.settled(clock() + 5)
    books.twin(A, B)
    books.twin(A, C)
    books.finish(A, Outcome.IMPORTED)
    assert B in books and C in books and B in settler and C in settler  # now duplicates


def test_twins_of_a_file_left_waiting_are_left_too(parts):
    books, _, _, clock = parts
    for path in (A, B):
        books.consider(Seen(path, ID), clock())
    books.twin(A, B)
    books.finish(A, Outcome.LEFT)
    assert books.idle and books.counts.left == 2


def test_a_file_leaving_is_forgotten_by_the_incomplete_files(parts):
    books, _, unfinished, clock = parts
    books.consider(Seen(A, ID), clock())
    unfinished.note(A, ID, clock())
    assert len(unfinished) == 1
    books.finish(A, Outcome.FAILED)
    assert len(unfinished) == 0


def test_a_kept_file_is_recognised_until_it_changes(parts):
    books, _, _, _ = parts
    books.keep(A, ID)
    assert books.kept(Seen(A, ID))
    assert not books.kept(Seen(A, Identity(1, 2, 3, 4, 6)))


def test_a_warning_is_said_once_per_detail(parts, _logs):
    books, _, _, _ = parts
    for _ in range(3):
        books.warn_once(A, "file_unreadable", "Permission denied")
    books.warn_once(A, "file_unreadable", "Input/output error")
    assert [e["detail"] for e in _logs if e["event"] == "file_unreadable"] == [
        "Permission denied", "Input/output error"
    ]
    books.read_fine(A)
    books.warn_once(A, "file_unreadable", "Permission denied")
    assert len([e for e in _logs if e["event"] == "file_unreadable"]) == 3


def test_later_holds_the_file_until_its_time(parts):
    books, settler, _, clock = parts
    books.consider(Seen(A, ID), clock())
    settler.settled(clock() + 5)
    books.later(Seen(A, ID), clock() + 30, Why.INCOMPLETE)
    assert A in settler
    assert settler.settled(clock() + 29) == []
    assert [s.path for s in settler.settled(clock() + 30)] == [A]


def test_left_counts_files_not_the_times_they_were_left(parts):
    books, _, _, clock = parts
    for _ in range(3):  # unreadable at each scan: left each time
        books.consider(Seen(A, ID), clock())
        books.finish(A, Outcome.LEFT)
    books.consider(Seen(B, ID), clock())
    books.finish(B, Outcome.LEFT)
    assert books.counts.left == 2
    books.consider(Seen(A, ID), clock())
    books.finish(A, Outcome.IMPORTED)  # readable at last: it is not waiting any more
    assert books.counts.left == 1 and books.counts.imported == 1


def test_every_file_waiting_is_counted_with_its_age_and_why(parts):
    from daemon.flow.books import Why

    books, settler, _, clock = parts
    books.consider(Seen(A, ID), 100.0)
    books.consider(Seen(B, ID), 150.0)
    books.consider(Seen(C, ID), 160.0)
    books.waits(B, Why.SENDING)  # in a request: not waiting
    books.waits(C, Why.QUEUED)
    books.later(Seen(A, ID), 300.0, Why.INCOMPLETE)
    waiting = books.waiting(200.0)
    assert (waiting.files, waiting.oldest_s, waiting.oldest_why) == (2, 100.0, Why.INCOMPLETE)
    assert waiting.by_why == {"incomplete": 1, "queued": 1}
    # Unreadable: left in its inbox, it still waits, and keeps its age across scans.
    books.waits(A, Why.UNREADABLE)
    books.finish(A, Outcome.LEFT)
    books.consider(Seen(A, ID), 250.0)
    books.waits(A, Why.UNREADABLE)
    books.finish(A, Outcome.LEFT)
    assert books.waiting(260.0).oldest_s == 160.0
    assert books.waiting(260.0).oldest_why == Why.UNREADABLE
    books.listed({B, C})  # a person removed it: it waits no more
    assert books.waiting(260.0).files == 1 and books.counts.left == 0
