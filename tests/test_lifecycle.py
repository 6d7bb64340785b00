"""What Qonto's e-invoicing answers mean: codes in any shape, events, status counts."""

from __future__ import annotations

import pytest

from daemon.flow.lifecycle import (
    LABELS,
    Bucket,
    bucket,
    einvoice_counts,
    label,
    new_events,
    parse_code,
    read_events,
)
from daemon.journal import EinvoiceState
from daemon.journal.einvoices import Event


@pytest.mark.parametrize(("raw", "code"), [
    ("210", 210), (210, 210), ("210 ", 210), (210.0, 210), ("210.0", 210), (" 200", 200),
    ("²", "²"), ("9" * 5000, "9" * 40), ("abc", "abc"), (True, None), (None, None), ("", None),
    (-1, "-1"), (1e300, "1e+300"), ("٢١٠", "٢١٠"),
])
def test_a_code_in_any_shape_is_a_number_or_kept_as_it_came(raw, code):
    assert parse_code(raw) == code


def test_every_code_of_the_reform_has_its_label():
    assert set(LABELS) == set(range(200, 215))
    assert label(214) == "Visée" and label(999) == label("x") == "code inconnu"


def test_events_are_read_as_qonto_sends_them():
    events = read_events([
        {"status_code": "200", "timestamp": "2026-11-30T10:00:00Z", "reason": None,
         "reason_message": None},
        "not an event",
        {"timestamp": "no code"},
        {"status_code": 213, "timestamp": "2026-11-30T11:00:00Z", "reason": "REJ_SEMAN",
         "reason_message": "SIREN absent"},
    ])
    assert events == [
        Event(200, "2026-11-30T10:00:00Z"),
        Event(213, "2026-11-30T11:00:00Z", "REJ_SEMAN", "SIREN absent"),
    ]
    assert read_events({"not": "a list"}) == [] and read_events(None) == []


def test_a_status_that_recurs_at_another_time_is_new():
    known = [Event(200, "t0"), Event(207, "t1")]
    seen = [Event(200, "t0"), Event(207, "t1"), Event(209, "t2"), Event(207, "t3"),
            Event(207, "t3")]
    assert new_events(known, seen) == [Event(209, "t2"), Event(207, "t3")]


@pytest.mark.parametrize(("state", "status", "codes", "expected"), [
    (EinvoiceState.PENDING, None, [], Bucket.WAITING),
    (EinvoiceState.HELD, None, [], Bucket.HELD),
    (EinvoiceState.SUBMITTED, "submitted", [200, 201], Bucket.SUBMITTED),
    (EinvoiceState.SUBMITTED, "submitted", [200, 202], Bucket.DELIVERED),
    (EinvoiceState.SUBMITTED, "submitted", [200, 202, 207], Bucket.ACTION),
    (EinvoiceState.SUBMITTED, "submitted", [200, 202, 208], Bucket.ACTION),
    (EinvoiceState.FINAL, "approved", [200, 202, 212], Bucket.DELIVERED),
    (EinvoiceState.FINAL, "declined", [200, 202, 210], Bucket.REFUSED),
    (EinvoiceState.FINAL, "submission_failed", [200], Bucket.REFUSED),  # no 213 event
    (EinvoiceState.FINAL, "not_delivered", [200, 201], Bucket.REFUSED),
    (EinvoiceState.REJECTED, None, [], Bucket.REFUSED),
    (EinvoiceState.SUBMITTED, None, ["²", 200], Bucket.SUBMITTED),
])
def test_status_counts_each_e_invoice_where_a_person_expects_it(state, status, codes, expected):
    assert bucket(state, status, codes) is expected


def test_counts_per_organization_list_every_bucket():
    counts = einvoice_counts([("a", EinvoiceState.HELD, None, []),
                              ("a", EinvoiceState.FINAL, "declined", [210])])
    assert counts == {"a": {"waiting": 0, "held": 1, "submitted": 0, "delivered": 0,
                            "action_needed": 0, "refused": 1}}


def test_events_recorded_before_v4_are_recognised_not_repeated():
    from daemon.flow.lifecycle import merge_events

    known = [Event(200, None), Event(201, None)]  # migrated: v3 kept no time of Qonto's
    seen = [Event(200, "t0"), Event(201, "t1"), Event(202, "t2")]
    merged, new = merge_events(known, seen)
    assert new == [Event(202, "t2")]  # only the one really new
    assert merged == (Event(200, "t0"), Event(201, "t1"), Event(202, "t2"))  # times filled
