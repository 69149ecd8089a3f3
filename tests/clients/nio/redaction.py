#!/usr/bin/env python3
"""Redactions in a room of version 12, as matrix-nio sees them.

Usage: redaction.py CLIENT_URL

From room version 11 a redaction names the event it redacts in
`content.redacts`; matrix-nio 0.26 reads only the top-level `redacts`. One
user creates a v12 room, sends a message and redacts it, then checks that
/sync, /messages, /context and /event each give nio a RedactionEvent whose
`redacts` is the message, and that the message itself comes back redacted.

Prints a transcript to stdout and exits 0 on success; on failure prints the
reason to stderr and exits 1. Every network wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
import traceback

try:
    from nio import (
        AsyncClient,
        AsyncClientConfig,
        ErrorResponse,
        MessageDirection,
        RedactedEvent,
        RedactionEvent,
        RegisterResponse,
        RoomContextResponse,
        RoomCreateResponse,
        RoomGetEventResponse,
        RoomMessagesResponse,
        RoomRedactResponse,
        RoomSendResponse,
        SyncResponse,
    )
except ImportError as exc:  # pragma: no cover - environment problem
    print(
        f"FAIL: cannot import matrix-nio ({exc}); run tests/clients/install.sh "
        "and use the NEURITE_PYTHON it prints",
        file=sys.stderr,
    )
    sys.exit(1)

TAG = "[nio redaction]"
BUDGET = float(os.environ.get("NEURITE_CLIENT_BUDGET", "60"))
WAIT = float(os.environ.get("NEURITE_CLIENT_WAIT", "20"))
REASON = "posted in the wrong room"


class CheckFailed(Exception):
    pass


START = time.monotonic()


def say(line: str) -> None:
    print(f"{TAG} {line}", flush=True)


def expect(resp: object, cls: type, what: str):
    if not isinstance(resp, cls):
        if isinstance(resp, ErrorResponse):
            raise CheckFailed(f"{what} failed: {resp.status_code} {resp.message}")
        raise CheckFailed(f"{what} failed: unexpected {type(resp).__name__}: {resp!r}"[:500])
    return resp


async def bounded(coro, what: str):
    try:
        return await asyncio.wait_for(coro, WAIT)
    except asyncio.TimeoutError:
        raise CheckFailed(f"timed out after {WAIT:.0f}s: {what}") from None


def check_redaction(ev: object, message_id: str, where: str) -> None:
    if not isinstance(ev, RedactionEvent):
        raise CheckFailed(f"{where}: the redaction reached nio as {type(ev).__name__}: {ev!r}"[:600])
    if ev.redacts != message_id:
        raise CheckFailed(f"{where}: redacts is {ev.redacts!r}, expected {message_id!r}")
    if ev.reason != REASON:
        raise CheckFailed(f"{where}: reason is {ev.reason!r}")
    say(f"{where}: RedactionEvent redacts {ev.redacts}")


async def run(url: str) -> None:
    config = AsyncClientConfig(store_sync_tokens=False, request_timeout=WAIT)
    client = AsyncClient(url, config=config)
    try:
        name = f"nioredact{secrets.token_hex(6)}"
        expect(
            await bounded(client.register(name, secrets.token_urlsafe(18)), "register"),
            RegisterResponse,
            "register",
        )
        created = expect(
            await bounded(client.room_create(name="Redactions", room_version="12"), "createRoom"),
            RoomCreateResponse,
            "createRoom (version 12)",
        )
        room = created.room_id
        first = expect(await bounded(client.sync(timeout=0), "first sync"), SyncResponse, "sync")
        since = first.next_batch

        sent = expect(
            await bounded(
                client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "oops"}),
                "send",
            ),
            RoomSendResponse,
            "send",
        )
        message_id = sent.event_id
        redacted = expect(
            await bounded(client.room_redact(room, message_id, reason=REASON), "redact"),
            RoomRedactResponse,
            "redact",
        )
        redaction_id = redacted.event_id
        say(f"room {room}: message {message_id} redacted by {redaction_id}")

        # /sync: the redaction comes in the timeline.
        found = None
        deadline = time.monotonic() + WAIT
        while found is None:
            if time.monotonic() > deadline:
                raise CheckFailed("the redaction never came through /sync")
            resp = expect(
                await bounded(client.sync(timeout=1000, since=since), "sync"), SyncResponse, "sync"
            )
            since = resp.next_batch
            info = resp.rooms.join.get(room)
            for ev in info.timeline.events if info else []:
                if getattr(ev, "event_id", None) == redaction_id:
                    found = ev
        check_redaction(found, message_id, "/sync")

        # /messages, newest first: the redaction, and the message redacted.
        page = expect(
            await bounded(
                client.room_messages(room, start=since, direction=MessageDirection.back, limit=10),
                "messages",
            ),
            RoomMessagesResponse,
            "/messages",
        )
        by_id = {getattr(ev, "event_id", None): ev for ev in page.chunk}
        if redaction_id not in by_id:
            raise CheckFailed(f"/messages lacks the redaction: {list(by_id)}")
        check_redaction(by_id[redaction_id], message_id, "/messages")
        if not isinstance(by_id.get(message_id), RedactedEvent):
            raise CheckFailed(f"/messages: the message is not redacted: {by_id.get(message_id)!r}")
        say("/messages: the message comes back as a RedactedEvent")

        context = expect(
            await bounded(client.room_context(room, redaction_id, limit=2), "context"),
            RoomContextResponse,
            "/context",
        )
        check_redaction(context.event, message_id, "/context")

        single = expect(
            await bounded(client.room_get_event(room, redaction_id), "event"),
            RoomGetEventResponse,
            "/event",
        )
        check_redaction(single.event, message_id, "/event")
    finally:
        await client.close()


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} CLIENT_URL", file=sys.stderr)
        return 2

    def on_alarm(_signum, _frame):
        print(f"FAIL: still running after {BUDGET + 15:.0f}s, aborting", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(BUDGET) + 15)
    try:
        asyncio.run(run(sys.argv[1].rstrip("/")))
    except CheckFailed as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - report anything unexpected as a failure
        print("FAIL: unexpected error", file=sys.stderr)
        traceback.print_exc()
        return 1
    say(f"PASS in {time.monotonic() - START:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
