"""LeaseBook in-process: the jobs a worker holds, cancel grace, and what belongs to which socket."""

from __future__ import annotations

import pytest

from tts_worker.leases import LeaseBook

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def test_open_get_close() -> None:
    book = LeaseBook(cancel_grace_s=2.0)
    lease = book.open("job-1", 1, generation=3, stream=True)
    assert (lease.key, lease.generation, lease.stream) == (("job-1", 1), 3, True)
    assert not lease.cancel.is_set() and lease.cancel_deadline is None and not lease.cancelled_by_broker
    book.open("job-1", 2, generation=3, stream=False)  # another attempt of the same job is another lease
    assert len(book) == 2 and ("job-1", 1) in book and book.get(("job-1", 1)) is lease
    with pytest.raises(ValueError):
        book.open("job-1", 1, generation=4, stream=False)
    assert book.close(("job-1", 1)) is lease
    assert book.close(("job-1", 1)) is None
    assert [lease.key for lease in book] == [("job-1", 2)]


def test_cancel_sets_the_event_and_the_grace_starts_at_the_first_cancel() -> None:
    book = LeaseBook(cancel_grace_s=2.0)
    lease = book.open("job-1", 1, generation=1, stream=False)
    book.cancel(lease, 100.0, by_broker=True)
    assert lease.cancel.is_set() and lease.cancel_deadline == 102.0 and lease.cancelled_by_broker
    book.cancel(lease, 101.5)  # a later cancel (connection lost) neither extends the grace nor clears the flag
    assert lease.cancel_deadline == 102.0 and lease.cancelled_by_broker


def test_cancel_all_reports_only_the_leases_not_yet_cancelled() -> None:
    book = LeaseBook(cancel_grace_s=1.0)
    first = book.open("a", 1, generation=1, stream=False)
    second = book.open("b", 1, generation=1, stream=False)
    book.cancel(first, 10.0, by_broker=True)
    fresh = book.cancel_all(12.0)
    assert [lease.key for lease in fresh] == [("b", 1)]
    assert second.cancel.is_set() and second.cancel_deadline == 13.0 and not second.cancelled_by_broker
    assert first.cancel_deadline == 11.0
    assert book.cancel_all(20.0) == []


def test_overdue_only_after_the_grace_ran_out() -> None:
    book = LeaseBook(cancel_grace_s=2.0)
    running = book.open("running", 1, generation=1, stream=False)
    cancelled = book.open("cancelled", 1, generation=1, stream=False)
    assert book.overdue(1e9) is None  # nothing cancelled: nothing can be overdue
    book.cancel(cancelled, 100.0)
    assert book.overdue(101.9) is None
    assert book.overdue(102.0) is None
    assert book.overdue(102.01) is cancelled
    book.close(cancelled.key)
    assert book.overdue(200.0) is None and book.get(running.key) is running


def test_busy_counts_the_leases_of_one_socket_generation() -> None:
    book = LeaseBook(cancel_grace_s=1.0)
    book.open("old-socket", 1, generation=1, stream=False)
    book.open("a", 1, generation=2, stream=False)
    book.open("b", 1, generation=2, stream=True)
    assert (book.busy_on(1), book.busy_on(2), book.busy_on(3)) == (1, 2, 0)
