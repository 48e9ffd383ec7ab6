"""runtime.work: progress reaches every request's control; a batch stops only when all gave up."""

from __future__ import annotations

import threading
import time

import pytest

from runtime.errors import Canceled
from runtime.work import Control, Work, current, running


def test_progress_reaches_every_control_and_a_batch_stops_only_when_all_cancel() -> None:
    first, second = Control(), Control()
    heard: list[tuple[str, int]] = []
    first.listen(lambda step, _total: heard.append(("first", step)))
    second.listen(lambda step, _total: heard.append(("second", step)))
    work = Work([first, second])
    work.step(1, 10)
    first.cancel()
    work.step(2, 10)  # the second request still wants its image
    second.cancel()
    with pytest.raises(Canceled, match="step 3 of 10"):
        work.step(3, 10)
    assert [step for _, step in heard] == [1, 1, 2, 2, 3, 3]
    assert {name for name, _ in heard} == {"first", "second"}


def test_each_step_carries_the_time_it_ended() -> None:
    control = Control()
    heard: list[float | None] = []
    control.listen(lambda _step, _total: heard.append(control.step_at))
    assert control.step_at is None
    before = time.time()
    Work([control]).step(1, 2)
    after = time.time()
    Work([control]).report(2, 2, at=123.5)  # stamped where the work ran (a worker process)
    assert heard[0] is not None
    assert before <= heard[0] <= after
    assert heard[1] == 123.5


def test_the_work_in_hand_belongs_to_its_thread() -> None:
    mine = Work([Control()])
    seen: list[Work] = []
    with running(mine):
        assert current() is mine
        other = threading.Thread(target=lambda: seen.append(current()))
        other.start()
        other.join()
    assert seen[0] is not mine
    assert current() is not mine
    current().step(1, 1)  # outside any work: nothing to cancel, nobody to tell
