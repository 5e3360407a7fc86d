"""JobOptions is the one way a call's job options become a SUBMIT body, and both clients send the same bodies
through the same ClientApi (checked on a real ROUTER socket standing in for the broker)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import zmq

from tts_protocol import Command, Message
from tts_protocol.constants import Priority
from tts_protocol.messages import Error, Result, Submit

from tts_client import AsyncTtsClient, ClientSettings, InvalidRequest, JobOptions, NotFound, TtsClient
from tts_client.jobspec import job_options

from peers import ScriptedBroker

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

SETTINGS = ClientSettings(speaker="default-speaker", model="tone", timeout_s=7)


def test_options_become_one_submit_body() -> None:
    options = JobOptions(speaker="ann", priority="high", deadline_ms=5, attempt_timeout_ms=7, voice={"seed": 1},
                         cache=False, job_id="opt-1")
    assert options.to_submit(SETTINGS, "Hello.", stream=True) == Submit(
        job_id="opt-1", text="Hello.", speaker="ann", model="tone", priority=Priority.HIGH, deadline_ms=5,
        timeout_ms=7, stream=True, voice={"seed": 1}, cache=False)
    plain = JobOptions().to_submit(SETTINGS, "Hi.")
    assert (plain.speaker, plain.model, plain.stream, plain.job_id.startswith("job-")) == (
        "default-speaker", "tone", False, True)
    assert JobOptions().call_timeout_s(SETTINGS) == 7 and JobOptions(timeout_s=0).call_timeout_s(SETTINGS) == 0


def test_keywords_are_laid_over_options() -> None:
    base = JobOptions(speaker="ann", cache=True)
    assert job_options(base, {"speaker": "bob"}) == JobOptions(speaker="bob", cache=True)
    assert job_options(None, {}) == JobOptions() and job_options(base, {}) is base
    with pytest.raises(TypeError):
        job_options(base, {"spaeker": "typo"})  # type: ignore[typeddict-unknown-key]


@pytest.mark.parametrize("text, options", [
    ("", JobOptions()), ("x", JobOptions(job_id="bad id")), ("x", JobOptions(priority="urgent")),
    ("x", JobOptions(deadline_ms=-1)), ("x", JobOptions(voice={"k": object()})),
])
def test_invalid_options_raise_invalid_request(text: str, options: JobOptions) -> None:
    with pytest.raises(InvalidRequest):
        options.to_submit(SETTINGS, text)


def send_result(router: ScriptedBroker, job_id: str) -> None:
    router.reply(Command.RESULT, Result(job_id=job_id, attempt=1, worker_id="w", engine="tone", model="m",
                                       sample_rate=16000, num_samples=4), b"\x01\x00" * 4)


def next_message(router: ScriptedBroker, command: Command) -> Message:
    _at, msg = router.next(10)
    assert msg.command is command, f"expected {command.name}, got {msg.command.name}"
    return msg


@pytest.fixture
def router(ctx: zmq.Context) -> ScriptedBroker:
    return ScriptedBroker(ctx)


def test_both_clients_send_the_same_bodies(router: ScriptedBroker) -> None:
    options = JobOptions(speaker="ann", voice={"length_scale": 1.5}, priority="low")
    bodies: dict[str, Any] = {}
    with TtsClient(router.url, settings=SETTINGS) as sync_client:
        handle = sync_client.submit("Same text.", options=options, job_id="sync-1", cache=True)
        bodies["sync"] = next_message(router, Command.SUBMIT).body
        send_result(router, "sync-1")
        assert handle.result().job_id == "sync-1"
        with ThreadPoolExecutor(1) as pool:
            status = pool.submit(sync_client.job_status, "nope")
            msg = next_message(router, Command.JOB_STATUS)
            assert msg.body.job_id == "nope"
            router.reply(Command.ERROR, Error(req_id=msg.body.req_id, code="not_found"))
            with pytest.raises(NotFound):
                status.result(10)

    async def run_async() -> None:
        async with AsyncTtsClient(router.url, settings=SETTINGS) as async_client:
            job = asyncio.ensure_future(async_client.synthesize("Same text.", options=options, job_id="async-1",
                                                                cache=True))
            bodies["async"] = (await asyncio.to_thread(next_message, router, Command.SUBMIT)).body
            send_result(router, "async-1")
            assert (await job).job_id == "async-1"
            with pytest.raises(InvalidRequest):
                await async_client.jobs(state="no-such-state")

    asyncio.run(run_async())
    assert bodies["sync"].model_copy(update={"job_id": "x"}) == bodies["async"].model_copy(update={"job_id": "x"})
    assert (bodies["sync"].speaker, bodies["sync"].cache, bodies["sync"].priority) == ("ann", True, Priority.LOW)


def test_both_clients_are_made_from_client_api() -> None:
    """Every request call is declared once, in ClientApi: both clients have it, with its signature and docstring;
    TtsClient's returns the result, AsyncTtsClient's is a coroutine."""
    import inspect

    from tts_client.api import ClientApi

    calls = [name for name, f in vars(ClientApi).items()
             if inspect.isfunction(f) and not name.startswith("_") and name not in ("submit", "cancel")]
    assert {"job_status", "jobs", "broker_status", "ping", "drain", "pause", "resume"} <= set(calls)
    for name in calls:
        api_call, sync_call = getattr(ClientApi, name), getattr(TtsClient, name)
        async_call = getattr(AsyncTtsClient, name)
        assert api_call.__doc__ and sync_call.__doc__ == async_call.__doc__ == api_call.__doc__, name
        assert inspect.signature(sync_call) == inspect.signature(async_call) == inspect.signature(api_call), name
        assert inspect.iscoroutinefunction(async_call) and not inspect.iscoroutinefunction(sync_call), name
