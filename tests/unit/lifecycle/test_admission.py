"""The admission gate: limit, bounded FIFO queue, timeouts, release exactly once, close."""

from __future__ import annotations

import asyncio

import pytest

from runtime.errors import Draining, Overloaded, QueueTimeout
from runtime.lifecycle.admission import AdmissionGate


def test_the_gate_accepts_limit_plus_queue_then_refuses_with_retry_after() -> None:
    gate = AdmissionGate(limit=1, queue_size=2)
    tickets = [gate.reserve(f"r{i}") for i in range(3)]
    with pytest.raises(Overloaded) as raised:
        gate.reserve("r3")
    assert raised.value.retry_after is not None
    assert raised.value.retry_after >= 1
    gate.release(tickets[0])
    gate.reserve("r4")


def test_turns_are_granted_in_arrival_order_within_the_limit() -> None:
    async def scenario() -> list[str]:
        gate = AdmissionGate(limit=1, queue_size=3)
        order: list[str] = []

        async def request(name: str) -> None:
            ticket = gate.reserve(name)
            await gate.wait_turn(ticket, timeout=5)
            order.append(name)
            assert gate.running == 1
            await asyncio.sleep(0.01)
            gate.release(ticket)

        await asyncio.gather(*(request(f"r{i}") for i in range(4)))
        assert gate.accepted == 0
        return order

    assert asyncio.run(scenario()) == ["r0", "r1", "r2", "r3"]


def test_a_queue_timeout_releases_the_place() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(limit=1, queue_size=1)
        first = gate.reserve("a")
        await gate.wait_turn(first, timeout=1)
        second = gate.reserve("b")
        with pytest.raises(QueueTimeout):
            await gate.wait_turn(second, timeout=0.05)
        assert gate.accepted == 1
        assert gate.queued == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_does_not_leak_its_place() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(limit=1, queue_size=1)
        first = gate.reserve("a")
        await gate.wait_turn(first, timeout=1)
        second = gate.reserve("b")

        async def waiter() -> None:
            try:
                await gate.wait_turn(second, timeout=10)
            finally:
                gate.release(second)

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.release(first)
        assert gate.accepted == 0
        assert gate.running == 0

    asyncio.run(scenario())


def test_release_is_idempotent() -> None:
    gate = AdmissionGate(limit=2, queue_size=0)
    ticket = gate.reserve("a")
    gate.release(ticket)
    gate.release(ticket)
    assert gate.accepted == 0
    assert gate.running == 0


def test_a_closed_gate_refuses_new_work_and_keeps_accepted_work() -> None:
    gate = AdmissionGate(limit=1, queue_size=1)
    ticket = gate.reserve("a")
    gate.close()
    with pytest.raises(Draining):
        gate.reserve("b")
    assert gate.accepted_labels() == ["a"]
    assert not gate.wait_empty(timeout=0.01)
    gate.release(ticket)
    assert gate.wait_empty(timeout=1)


def test_retry_after_grows_with_the_queue() -> None:
    gate = AdmissionGate(limit=1, queue_size=10)
    first = gate.reserve("a")
    gate.release(first, served_seconds=4.0)
    for i in range(6):
        gate.reserve(f"q{i}")
    assert gate.retry_after() >= 4 * 5


def test_equal_request_ids_are_distinct_tickets_and_the_limit_holds() -> None:
    """A client's id is a label: twelve requests with one id take twelve places (or are
    refused), and releasing one never frees another's place."""
    gate = AdmissionGate(limit=1, queue_size=1)
    first, second = gate.reserve("same"), gate.reserve("same")
    assert first.id != second.id
    with pytest.raises(Overloaded):
        gate.reserve("same")
    gate.release(first)
    assert gate.accepted == 1
    assert gate.accepted_labels() == ["same"]
    gate.release(first)  # idempotent: the other ticket keeps its place
    assert gate.accepted == 1
