"""Packing: property tests over every limit, and the exact request size."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.flow.batcher import Limits, is_full, pack, request_bytes


@dataclass(frozen=True)
class Item:
    sha256: str
    name_key: str
    wire_bytes: int


LIMITS = Limits(max_request_bytes=15_000, closing_bytes=38)

items = st.lists(
    st.builds(
        Item,
        sha256=st.sampled_from([f"sha{i}" for i in range(12)]),
        name_key=st.sampled_from([f"n{i}.pdf" for i in range(12)]),
        wire_bytes=st.integers(min_value=1, max_value=LIMITS.max_request_bytes - 38),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(items)
def test_every_batch_respects_every_limit(waiting):
    rest = list(waiting)
    sent: list[Item] = []
    while rest:
        batch, left = pack(rest, LIMITS)
        assert 1 <= len(batch) <= 5
        assert request_bytes(batch, LIMITS) <= LIMITS.max_request_bytes
        assert len({i.name_key for i in batch}) == len(batch)
        assert len({i.sha256 for i in batch}) == len(batch)
        assert batch[0] is rest[0]  # the oldest file is never overtaken
        assert len(batch) + len(left) == len(rest)
        sent += batch
        rest = left
    assert sorted(map(id, sent)) == sorted(map(id, waiting))


def test_a_large_file_does_not_hold_up_smaller_ones():
    big = Item("a", "a.pdf", 9_000)
    bigger = Item("b", "b.pdf", 9_000)
    small = Item("c", "c.pdf", 100)
    batch, rest = pack([big, bigger, small], LIMITS)
    assert batch == [big, small] and rest == [bigger]
    assert is_full(batch, rest, LIMITS)


def test_partial_batch_is_not_full():
    batch, rest = pack([Item("a", "a.pdf", 10)], LIMITS)
    assert batch and not rest and not is_full(batch, rest, LIMITS)


def test_names_that_escape_alike_never_share_a_request():
    """`q"uote.pdf` goes on the wire as `q%22uote.pdf`: the server could not tell them apart."""
    from daemon.qonto import name_key

    assert name_key('q"uote.pdf') == name_key("q%22uote.pdf")
    assert name_key("e\u0301t\u00e9.pdf") == name_key("\u00e9t\u00e9.pdf")
    assert name_key("a.pdf") != name_key("b.pdf")
    a = Item("sha-a", name_key('q"uote.pdf'), 100)
    b = Item("sha-b", name_key("q%22uote.pdf"), 100)
    batch, rest = pack([a, b], LIMITS)
    assert batch == [a] and rest == [b]
