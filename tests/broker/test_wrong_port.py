"""Peers at the wrong port: the answers' shared rate (fake clock), and both answers on real sockets."""

from __future__ import annotations

import pytest
import zmq

from tts_protocol import Command, Side
from tts_protocol.codec import RouterPort

from tts_broker.wrong_port import AnswerRate, WrongPort

from harness import FakeClock, TrackedContext
from peers import RawClient, RawWorker

pytestmark = pytest.mark.timeout(30)


@pytest.mark.unit
def test_the_answer_rate_allows_a_burst_then_per_s() -> None:
    clock = FakeClock()
    rate = AnswerRate(4, clock=clock)
    assert [rate.allow() for _ in range(6)] == [True] * 4 + [False] * 2
    clock.advance(0.5)  # two tokens back
    assert [rate.allow() for _ in range(3)] == [True, True, False]
    clock.advance(100)  # never more than the burst
    assert sum(rate.allow() for _ in range(10)) == 4 and rate.suppressed == 9


def test_both_answers_on_real_sockets_share_the_rate(ctx: TrackedContext) -> None:
    router = ctx.socket(zmq.ROUTER)
    ctx.adopt(router)  # the `ctx` fixture closes it at teardown
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    port = RouterPort(router, Side.CLIENT)
    clock = FakeClock()
    wrong = WrongPort(frontend="tcp://front:5555", backend="tcp://back:5556", rate=AnswerRate(2, clock=clock))
    worker = RawWorker(ctx, endpoint)  # sends READY at once
    assert router.poll(5000)
    assert wrong.worker_at_frontend(port, router.recv_multipart())
    bye = worker.recv_until(Command.B_DISCONNECT)
    assert bye.body.reason == "this is the broker's client port; workers connect to its backend (tcp://back:5556)"
    worker.heartbeat()
    assert router.poll(5000)
    assert wrong.worker_at_frontend(port, router.recv_multipart())
    worker.recv_until(Command.B_DISCONNECT)
    client = RawClient(ctx, endpoint)
    client.submit("lost", "hello")
    assert router.poll(5000)
    frames = router.recv_multipart()
    assert not wrong.worker_at_frontend(port, frames)  # a client's message is not a worker's hello
    assert wrong.client_at_backend(port, frames)  # handled, but the rate is spent: nothing sent
    assert wrong.rate.suppressed == 1
    clock.advance(1.0)
    assert wrong.client_at_backend(port, frames)
    error = client.recv_until(Command.ERROR)
    assert (error.body.job_id, error.body.code) == ("lost", "bad_request")
    assert "tcp://front:5555" in error.body.message
    worker.send_raw([b"TTSW2\x21", b"\x80"])  # a READY with no fields: garbage, answered as such elsewhere
    assert router.poll(5000)
    assert not wrong.worker_at_frontend(port, router.recv_multipart())
