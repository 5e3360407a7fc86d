"""`tts bridge amqp` against a throwaway RabbitMQ node, with an RPC-style pika producer (reply_to and
correlation_id), a real broker and tone workers."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from typing import Any, Callable, Optional

import pika
import pytest

from bridgekit import BRIDGE_JOBS, RabbitServer, check_audio, job_text, syntheses
from harness import BrokerProc, Proc, wait_for

pytestmark = pytest.mark.timeout(300)

JOBS = BRIDGE_JOBS
QUORUM = {"x-queue-type": "quorum"}


class RpcProducer:
    """pika, the way a Python service asks for speech: publish with reply_to + correlation_id, collect replies.

    The reply queue is durable (quorum), so replies survive a RabbitMQ restart.
    """

    def __init__(self, server: RabbitServer, queue: str) -> None:
        self.server = server
        self.queue = queue
        self.replies_queue = f"{queue}.replies"
        self.replies: list[dict[str, Any]] = []
        self.correlations: list[Optional[str]] = []
        self._connect()

    def _connect(self) -> None:
        params = pika.URLParameters(self.server.url)
        params.socket_timeout = 5
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()
        self.channel.queue_declare(self.queue, durable=True, arguments=QUORUM)
        self.channel.queue_declare(self.replies_queue, durable=True, arguments=QUORUM)

    def publish(self, body: bytes, message_id: Optional[str], correlation_id: str) -> None:
        self.channel.basic_publish("", self.queue, body, pika.BasicProperties(
            reply_to=self.replies_queue, correlation_id=correlation_id, message_id=message_id, delivery_mode=2))

    def send_jobs(self, tag: str, count: int) -> dict[str, str]:
        texts = {}
        for i in range(count):
            key = f"{tag}-{i}"
            texts[key] = job_text(i, tag)
            self.publish(json.dumps({"text": texts[key], "id": key}).encode(), key, f"corr-{key}")
        return texts

    def collect(self) -> int:
        """Take the replies waiting now (reconnecting if the server went away); how many there are in all."""
        try:
            while True:
                method, props, body = self.channel.basic_get(self.replies_queue, auto_ack=True)
                if method is None:
                    break
                self.replies.append(json.loads(body))
                self.correlations.append(props.correlation_id)
        except (pika.exceptions.AMQPError, OSError):
            try:
                self._connect()
            except (pika.exceptions.AMQPError, OSError):
                pass
        return len(self.replies)

    def dead_letters(self) -> list[tuple[dict[str, Any], bytes]]:
        out = []
        while True:
            method, props, body = self.channel.basic_get(f"{self.queue}.dead", auto_ack=True)
            if method is None:
                return out
            out.append((props.headers or {}, body))

    def close(self) -> None:
        try:
            self.connection.close()
        except (pika.exceptions.AMQPError, OSError):
            pass


@pytest.fixture
def producer(rabbitmq_server: RabbitServer) -> Any:
    made: list[RpcProducer] = []

    def make(queue: str) -> RpcProducer:
        made.append(RpcProducer(rabbitmq_server, queue))
        return made[-1]

    yield make
    for p in made:
        p.close()


def _check_all(p: RpcProducer, texts: dict[str, str]) -> None:
    counts = Counter(r["id"] for r in p.replies)
    assert set(counts) == set(texts), f"missing: {sorted(set(texts) - set(counts))[:5]}"
    twice = [k for k, c in counts.items() if c > 1]
    assert not twice, f"answered more than once: {twice[:5]}"
    assert sorted(p.correlations) == sorted(f"corr-{k}" for k in texts)
    for reply in p.replies:
        assert reply["status"] == "done", reply
        check_audio(reply, texts[reply["id"]])


def _args(server: RabbitServer, queue: str, *extra: str) -> list[str]:
    return ["--url", server.url, "--queue", queue, *extra]


def test_amqp_rpc_jobs_come_back_with_correct_audio(rabbitmq_server: RabbitServer, producer: Callable[..., RpcProducer],
                                                    stack: BrokerProc, start_bridge: Callable[..., Proc]) -> None:
    queue = f"tts.{secrets.token_hex(4)}"
    p = producer(queue)
    texts = p.send_jobs(queue, JOBS)
    start_bridge(stack, "amqp", *_args(rabbitmq_server, queue))
    wait_for(lambda: p.collect() >= JOBS, 120, interval_s=0.2, what=f"{JOBS} replies")
    _check_all(p, texts)
    assert syntheses(stack) == JOBS


def test_amqp_bridge_killed_halfway_every_job_answered_once(rabbitmq_server: RabbitServer,
                                                            producer: Callable[..., RpcProducer], stack: BrokerProc,
                                                            start_bridge: Callable[..., Proc]) -> None:
    queue = f"tts.{secrets.token_hex(4)}"
    p = producer(queue)
    args = _args(rabbitmq_server, queue, "--max-in-flight", "16")
    first = start_bridge(stack, "amqp", *args)
    texts = p.send_jobs(queue, JOBS)
    wait_for(lambda: p.collect() >= JOBS // 2, 120, interval_s=0.05, what="half the replies")
    first.kill()  # its unacked messages go back to the queue
    start_bridge(stack, "amqp", *args)
    wait_for(lambda: p.collect() >= JOBS, 120, interval_s=0.2, what=f"{JOBS} replies")
    p.collect()
    _check_all(p, texts)
    assert syntheses(stack) == JOBS, "a job was synthesised twice"


def test_amqp_rabbitmq_restart_mid_run_loses_nothing(rabbitmq_server: RabbitServer,
                                                     producer: Callable[..., RpcProducer], stack: BrokerProc,
                                                     start_bridge: Callable[..., Proc]) -> None:
    queue = f"tts.{secrets.token_hex(4)}"
    p = producer(queue)
    bridge = start_bridge(stack, "amqp", *_args(rabbitmq_server, queue, "--max-in-flight", "16"))
    texts = p.send_jobs(queue, JOBS)
    wait_for(lambda: p.collect() >= JOBS // 3, 120, interval_s=0.05, what="a third of the replies")
    rabbitmq_server.restart()
    wait_for(lambda: p.collect() >= JOBS, 180, interval_s=0.3, what=f"{JOBS} replies")
    assert bridge.alive()
    _check_all(p, texts)
    assert syntheses(stack) == JOBS
    assert "reconnecting" in bridge.log() or "cannot connect" in bridge.log()


def test_amqp_malformed_messages_are_dead_lettered(rabbitmq_server: RabbitServer,
                                                   producer: Callable[..., RpcProducer], stack: BrokerProc,
                                                   start_bridge: Callable[..., Proc]) -> None:
    queue = f"tts.{secrets.token_hex(4)}"
    p = producer(queue)
    bridge = start_bridge(stack, "amqp", *_args(rabbitmq_server, queue))
    bad = {
        "not-json": b"{this is not json",
        "no-text": json.dumps({"speaker": "x", "id": "no-text"}).encode(),
        "huge": json.dumps({"text": "x" * (10 * 1024 * 1024), "id": "huge"}).encode(),
        "unknown-model": json.dumps({"text": "Hello there", "model": "no-such-engine", "id": "unknown-model"}).encode(),
    }
    for key, body in bad.items():
        p.publish(body, key, f"corr-{key}")
    texts = p.send_jobs(queue, 3)
    wait_for(lambda: p.collect() >= len(bad) + 3, 60, interval_s=0.1, what="all replies")
    by_corr = dict(zip(p.correlations, p.replies, strict=True))
    reasons = {key: by_corr[f"corr-{key}"]["error"] for key in bad}
    assert all(by_corr[f"corr-{key}"]["status"] == "failed" for key in bad)
    assert "not valid JSON" in reasons["not-json"]
    assert '"text" is missing' in reasons["no-text"]
    assert "10485760 characters" in reasons["huge"]
    assert "unknown model 'no-such-engine'" in reasons["unknown-model"]
    dead = p.dead_letters()
    assert sorted(h["x-tts-error"] for h, _body in dead) == sorted(reasons.values())
    assert [body for h, body in dead if "not valid JSON" in h["x-tts-error"]] == [bad["not-json"]]
    for key, text in texts.items():
        assert by_corr[f"corr-{key}"]["status"] == "done"
        check_audio(by_corr[f"corr-{key}"], text)
    assert bridge.alive()


def test_a_url_without_credentials_logs_in_as_the_default_user(rabbitmq_server: RabbitServer) -> None:
    """`tts bridge amqp`'s default --url carries no USER:PASSWORD (so --help shows none): aio-pika then logs in
    as RabbitMQ's default user, as the old `guest:guest@` default did."""
    import asyncio

    import aio_pika

    async def connect() -> None:
        connection = await aio_pika.connect(f"amqp://127.0.0.1:{rabbitmq_server.port}/", timeout=10)
        await connection.close()

    asyncio.run(connect())
