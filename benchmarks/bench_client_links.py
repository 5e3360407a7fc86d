"""What binding replies to keys (client_links.py) costs the broker loop under CURVE, per message in and out.

Real sockets (a ROUTER watched by ClientLinks, one DEALER over loopback TCP), no CURVE (it costs the same per
message either way and would only add noise): the steps the server adds under CURVE are timed against what
it does anyway, on the same frames, best of R rounds of N calls each.

- in:  reading a message's source descriptor (zmq.SRCFD) and `ClientLinks.seen` on a linked id (the usual case)
- out: `ClientLinks.allows` before a send (drains the monitor: one ZMQ_EVENTS query when nothing is waiting)
- for scale: RouterPort.parse of a PING (decode), and RouterPort.send of a PONG

Without CURVE the server takes none of these steps (one `is None` test per message).

    python benchmarks/bench_client_links.py [--calls 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import zmq

from tts_protocol import Command, Side, encode
from tts_protocol.codec import RouterPort
from tts_protocol.messages import Pong, Request

from tts_broker.client_links import ClientLinks, source_fd


def best_ns(step: Callable[[], Any], calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            step()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.setsockopt(zmq.SNDHWM, 0)
    port = RouterPort(router, Side.CLIENT)
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    links = ClientLinks(max_withheld_bytes=1 << 20)
    links.watch(router)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, b"alice")
    dealer.setsockopt(zmq.RCVHWM, 0)
    dealer.connect(endpoint)
    dealer.send_multipart(encode(Command.PING, Request(req_id="r1")))
    router.poll(5000)
    frames = port.recv()
    assert frames is not None
    identity = frames[0].bytes
    links.seen(identity, source_fd(frames), "client:alice")
    pong = Pong(req_id="r1", broker_id="b-bench", time_ms=0)
    calls, rounds = args.calls, args.rounds

    rows = [
        ("in: source_fd(frames)", best_ns(lambda: source_fd(frames), calls, rounds)),
        ("in: source_fd + ClientLinks.seen (linked)",
         best_ns(lambda: links.seen(identity, source_fd(frames), "client:alice"), calls, rounds)),
        ("out: ClientLinks.allows", best_ns(lambda: links.allows(identity), calls, rounds)),
        ("scale: RouterPort.parse (PING)", best_ns(lambda: port.parse(frames), calls, rounds)),
        ("scale: RouterPort.send (PONG)", best_ns(lambda: port.send(identity, Command.PONG, pong), calls // 10,
                                                  rounds)),
    ]
    for name, ns in rows:
        print(f"{name:45s} {ns:8.0f} ns")
    links.close()
    dealer.close(0)
    router.close(0)
    ctx.term()


if __name__ == "__main__":
    main()
