#!/usr/bin/env python3
"""Two-user chat check against a Matrix homeserver, driven by matrix-nio.

Usage: chat.py CLIENT_URL

Registers two fresh users (A, B) with password registration, logs B in
again with /login, lets A create a named room and invite B, lets B join
after seeing the invite through /sync, exchanges messages both ways and
checks that each side sees the other's messages through its own /sync loop,
in order, plus the room name. Finally it pages back through /messages and
checks that history has the same messages in the same order.

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
    import aiohttp
    from nio import (
        AsyncClient,
        AsyncClientConfig,
        ErrorResponse,
        InviteNameEvent,
        JoinResponse,
        LoginResponse,
        MessageDirection,
        RegisterResponse,
        RoomCreateResponse,
        RoomInviteResponse,
        RoomMemberEvent,
        RoomMessagesResponse,
        RoomMessageText,
        RoomNameEvent,
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

TAG = "[nio]"
# Overall budget for the whole run and the bound for any single wait.
BUDGET = float(os.environ.get("NEURITE_CLIENT_BUDGET", "60"))
WAIT = float(os.environ.get("NEURITE_CLIENT_WAIT", "20"))
# Long-poll timeout passed to /sync while waiting for something.
POLL_MS = 5000
# Messages sent one at a time, each waiting for the reply, then a burst.
ROUNDS = 3
BURST = 2
HISTORY_PAGE = 4
HISTORY_MAX_PAGES = 25


class CheckFailed(Exception):
    pass


START = time.monotonic()
DEADLINE = START + BUDGET


def say(line: str) -> None:
    print(f"{TAG} {line}", flush=True)


def describe(resp: object) -> str:
    if isinstance(resp, ErrorResponse):
        status = getattr(resp.transport_response, "status", None)
        return f"HTTP {status} {resp.status_code or ''} {resp.message or ''}".strip()
    return f"unexpected {type(resp).__name__}: {resp!r}"[:500]


def expect(resp: object, cls: type, what: str):
    if not isinstance(resp, cls):
        raise CheckFailed(f"{what} failed: {describe(resp)}")
    return resp


async def bounded(coro, what: str, limit: float = WAIT):
    remaining = DEADLINE - time.monotonic()
    if remaining <= 0:
        coro.close()
        raise CheckFailed(f"overall budget of {BUDGET:.0f}s used up before: {what}")
    timeout = min(limit, remaining)
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise CheckFailed(f"timed out after {timeout:.1f}s: {what}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise CheckFailed(f"{what}: transport error {type(exc).__name__}: {exc}") from None


class Peer:
    def __init__(self, label: str, url: str) -> None:
        self.label = label
        self.url = url
        self.localpart = f"nio{label.lower()}{secrets.token_hex(6)}"
        self.password = secrets.token_urlsafe(18)
        self.client = self._new_client()
        # room_id -> list of timeline events in the order /sync delivered them
        self.timeline: dict[str, list] = {}
        self.seen_ids: set[str] = set()
        self.invites: dict[str, list] = {}
        self.limited_rooms: set[str] = set()
        self.syncs = 0

    def _new_client(self) -> AsyncClient:
        config = AsyncClientConfig(
            encryption_enabled=False,
            store_sync_tokens=False,
            max_limit_exceeded=3,
            max_timeouts=1,
            request_timeout=WAIT,
        )
        return AsyncClient(self.url, config=config)

    @property
    def user_id(self) -> str:
        return self.client.user_id

    async def register(self) -> None:
        resp = await bounded(
            self.client.register(self.localpart, self.password, device_name=f"nio {self.label}"),
            f"{self.label} register",
        )
        expect(resp, RegisterResponse, f"{self.label} register {self.localpart}")
        if not resp.user_id.startswith(f"@{self.localpart}:"):
            raise CheckFailed(
                f"{self.label} register: user_id {resp.user_id!r} is not @{self.localpart}:<server>"
            )
        if self.client.access_token != resp.access_token:
            raise CheckFailed(f"{self.label} register: client did not adopt the access token")
        say(f"{self.label} registered {resp.user_id} (device {resp.device_id})")

    async def relogin(self) -> None:
        """Drop the registration session and log in again with the password."""
        old_device = self.client.device_id
        old_user = self.client.user_id
        await bounded(self.client.close(), f"{self.label} close")
        self.client = self._new_client()
        # nio logs in the user named in client.user; the localpart is enough.
        self.client.user = self.localpart
        resp = await bounded(
            self.client.login(self.password, device_name=f"nio {self.label} login"),
            f"{self.label} login",
        )
        expect(resp, LoginResponse, f"{self.label} login")
        if resp.user_id != old_user:
            raise CheckFailed(f"{self.label} login: got user_id {resp.user_id!r}, expected {old_user!r}")
        if resp.device_id == old_device:
            raise CheckFailed(
                f"{self.label} login without device_id reused device {old_device!r}; "
                "a new device was expected"
            )
        say(f"{self.label} logged in again as {resp.user_id} (device {resp.device_id})")

    async def sync_once(self, timeout_ms: int, limit: float | None = None) -> SyncResponse:
        what = f"{self.label} /sync (timeout={timeout_ms}ms)"
        # The server gets timeout_ms to answer; allow some slack on top.
        bound = timeout_ms / 1000 + 10
        if limit is not None:
            bound = min(bound, limit)
        resp = await bounded(self.client.sync(timeout=timeout_ms), what, limit=bound)
        expect(resp, SyncResponse, what)
        self.syncs += 1
        for room_id, info in resp.rooms.invite.items():
            self.invites[room_id] = list(info.invite_state)
        for room_id, info in resp.rooms.join.items():
            if info.timeline.limited and room_id in self.timeline:
                self.limited_rooms.add(room_id)
            events = self.timeline.setdefault(room_id, [])
            for ev in info.timeline.events:
                event_id = getattr(ev, "event_id", None)
                if event_id is None:
                    continue
                if event_id in self.seen_ids:
                    raise CheckFailed(f"{self.label}: /sync delivered event {event_id} twice")
                self.seen_ids.add(event_id)
                events.append(ev)
        return resp

    async def wait_for(self, predicate, what: str) -> None:
        """Run the sync loop until predicate() holds, at most WAIT seconds."""
        limit = time.monotonic() + WAIT
        while not predicate():
            now = time.monotonic()
            if now >= limit:
                extra = ""
                if self.limited_rooms:
                    extra = " (note: /sync reported a limited timeline, events may have been skipped)"
                raise CheckFailed(f"{self.label} did not see {what} within {WAIT:.0f}s{extra}")
            if now >= DEADLINE:
                raise CheckFailed(f"overall budget of {BUDGET:.0f}s used up while {self.label} waited for {what}")
            # Long-poll, but let the server answer before this wait runs out.
            poll_ms = max(0, min(POLL_MS, int((limit - now) * 1000) - 1000))
            try:
                await self.sync_once(poll_ms, limit=limit - now)
            except CheckFailed as exc:
                raise CheckFailed(f"{self.label} waiting for {what}: {exc}") from None

    def messages(self, room_id: str, sender: str | None = None) -> list:
        return [
            ev
            for ev in self.timeline.get(room_id, [])
            if isinstance(ev, RoomMessageText) and (sender is None or ev.sender == sender)
        ]

    def has_joined_member(self, room_id: str, user_id: str) -> bool:
        return any(
            isinstance(ev, RoomMemberEvent)
            and ev.state_key == user_id
            and ev.membership == "join"
            for ev in self.timeline.get(room_id, [])
        )

    def room_name(self, room_id: str) -> str | None:
        room = self.client.rooms.get(room_id)
        return room.name if room is not None else None

    async def send(self, room_id: str, body: str) -> str:
        resp = await bounded(
            self.client.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": body}
            ),
            f"{self.label} send {body!r}",
        )
        expect(resp, RoomSendResponse, f"{self.label} send {body!r}")
        say(f"{self.label} -> {body!r} ({resp.event_id})")
        return resp.event_id

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.client.close(), 5)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def check_in_order(label: str, seen: list, expected: list[tuple[str, str]]) -> None:
    got = [(ev.event_id, ev.body) for ev in seen]
    if got != expected:
        raise CheckFailed(
            f"{label} saw the other side's messages as {[b for _, b in got]} "
            f"(ids {[i for i, _ in got]}), expected {[b for _, b in expected]} "
            f"(ids {[i for i, _ in expected]})"
        )


async def fetch_history(peer: Peer, room_id: str) -> list:
    """Page backwards through /messages from the current sync position."""
    token = peer.client.next_batch
    if not token:
        raise CheckFailed(f"{peer.label} has no next_batch token to paginate from")
    events: list = []
    pages = 0
    while True:
        pages += 1
        if pages > HISTORY_MAX_PAGES:
            raise CheckFailed(f"/messages did not reach the start of the room in {HISTORY_MAX_PAGES} pages")
        resp = await bounded(
            peer.client.room_messages(
                room_id, start=token, direction=MessageDirection.back, limit=HISTORY_PAGE
            ),
            f"{peer.label} /messages page {pages}",
        )
        expect(resp, RoomMessagesResponse, f"{peer.label} /messages page {pages}")
        if len(resp.chunk) > HISTORY_PAGE:
            raise CheckFailed(f"/messages returned {len(resp.chunk)} events for limit={HISTORY_PAGE}")
        events.extend(resp.chunk)
        if not resp.chunk or not resp.end:
            break
        if resp.end == token:
            raise CheckFailed(f"/messages returned end == from ({token!r}) with a non-empty chunk")
        token = resp.end
    events.reverse()
    say(f"history: {len(events)} events in {pages} /messages pages")
    return events


async def run(url: str) -> None:
    say(f"homeserver {url}")
    a = Peer("A", url)
    b = Peer("B", url)
    try:
        await a.register()
        await b.register()
        if a.user_id.split(":", 1)[1] != b.user_id.split(":", 1)[1]:
            raise CheckFailed(f"users on different servers: {a.user_id} {b.user_id}")
        await b.relogin()

        await a.sync_once(0)
        await b.sync_once(0)

        room_name = f"Neurite nio check {secrets.token_hex(3)}"
        resp = await bounded(a.client.room_create(name=room_name), "A createRoom")
        expect(resp, RoomCreateResponse, "A createRoom")
        room_id = resp.room_id
        if not room_id.startswith("!"):
            raise CheckFailed(f"createRoom returned room_id {room_id!r}")
        say(f"A created room {room_id} named {room_name!r}")

        resp = await bounded(a.client.room_invite(room_id, b.user_id), "A invite B")
        expect(resp, RoomInviteResponse, "A invite B")
        say(f"A invited {b.user_id}")

        await b.wait_for(lambda: room_id in b.invites, f"the invite to {room_id}")
        invite_names = [
            ev.name for ev in b.invites[room_id] if isinstance(ev, (InviteNameEvent, RoomNameEvent))
        ]
        if invite_names and invite_names[-1] != room_name:
            raise CheckFailed(f"invite state names the room {invite_names[-1]!r}, expected {room_name!r}")
        say(
            "B saw the invite through /sync"
            + (f" (invite state names it {invite_names[-1]!r})" if invite_names else " (no name in invite state)")
        )

        resp = await bounded(b.client.join(room_id), "B join")
        expect(resp, JoinResponse, "B join")
        if resp.room_id != room_id:
            raise CheckFailed(f"join returned room_id {resp.room_id!r}, expected {room_id!r}")
        say("B joined")

        await b.wait_for(
            lambda: room_id in b.timeline and b.room_name(room_id) == room_name,
            f"the joined room {room_id} with name {room_name!r} (current name: {b.room_name(room_id)!r})",
        )
        say(f"B sees room name {b.room_name(room_id)!r}")
        await a.wait_for(
            lambda: a.has_joined_member(room_id, b.user_id),
            f"{b.user_id} join {room_id}",
        )
        if a.room_name(room_id) != room_name:
            raise CheckFailed(f"A sees room name {a.room_name(room_id)!r}, expected {room_name!r}")
        say(f"A saw B join; A sees room name {a.room_name(room_id)!r}")

        sent_by_a: list[tuple[str, str]] = []
        sent_by_b: list[tuple[str, str]] = []

        def a_sees(n: int) -> bool:
            return len(a.messages(room_id, b.user_id)) >= n

        def b_sees(n: int) -> bool:
            return len(b.messages(room_id, a.user_id)) >= n

        # Conversation: each message waits for the previous one from the peer.
        for i in range(1, ROUNDS + 1):
            body = f"nio A says {i} ({secrets.token_hex(2)})"
            sent_by_a.append((await a.send(room_id, body), body))
            await b.wait_for(lambda: b_sees(len(sent_by_a)), f"A's message {body!r}")
            check_in_order("B", b.messages(room_id, a.user_id), sent_by_a)
            say(f"B <- {body!r}")

            body = f"nio B replies {i} ({secrets.token_hex(2)})"
            sent_by_b.append((await b.send(room_id, body), body))
            await a.wait_for(lambda: a_sees(len(sent_by_b)), f"B's message {body!r}")
            check_in_order("A", a.messages(room_id, b.user_id), sent_by_b)
            say(f"A <- {body!r}")

        # Burst: both sides send several messages without waiting.
        for i in range(1, BURST + 1):
            body = f"nio A burst {i}"
            sent_by_a.append((await a.send(room_id, body), body))
        for i in range(1, BURST + 1):
            body = f"nio B burst {i}"
            sent_by_b.append((await b.send(room_id, body), body))
        await b.wait_for(lambda: b_sees(len(sent_by_a)), "A's burst")
        await a.wait_for(lambda: a_sees(len(sent_by_b)), "B's burst")
        check_in_order("B", b.messages(room_id, a.user_id), sent_by_a)
        check_in_order("A", a.messages(room_id, b.user_id), sent_by_b)
        say(f"B <- burst {[body for _, body in sent_by_a[ROUNDS:]]}")
        say(f"A <- burst {[body for _, body in sent_by_b[ROUNDS:]]}")

        # Each side also gets its own messages back, and both see one order.
        total = len(sent_by_a) + len(sent_by_b)
        await a.wait_for(lambda: len(a.messages(room_id)) >= total, "all messages including its own")
        await b.wait_for(lambda: len(b.messages(room_id)) >= total, "all messages including its own")
        order_a = [ev.event_id for ev in a.messages(room_id)]
        order_b = [ev.event_id for ev in b.messages(room_id)]
        if order_a != order_b:
            raise CheckFailed(f"A and B saw different message orders through /sync: {order_a} vs {order_b}")
        sent_ids = {event_id for event_id, _ in sent_by_a + sent_by_b}
        if set(order_a) != sent_ids or len(order_a) != total:
            raise CheckFailed(f"/sync message ids {order_a} differ from the sent ids {sorted(sent_ids)}")
        check_in_order("A (own echo)", a.messages(room_id, a.user_id), sent_by_a)
        check_in_order("B (own echo)", b.messages(room_id, b.user_id), sent_by_b)
        say(f"both sides saw the same {total} messages in the same order")

        # History through /messages, paged backwards from A's sync position.
        history = await fetch_history(a, room_id)
        hist_ids = [ev.event_id for ev in history if isinstance(ev, RoomMessageText)]
        if hist_ids != order_a:
            raise CheckFailed(f"/messages history order {hist_ids} differs from /sync order {order_a}")
        types = [getattr(ev, "source", {}).get("type") for ev in history]
        if "m.room.create" not in types:
            raise CheckFailed(f"/messages history did not reach m.room.create (types seen: {types})")
        hist_names = [ev.name for ev in history if isinstance(ev, RoomNameEvent)]
        if room_name not in hist_names:
            raise CheckFailed(f"/messages history has no m.room.name {room_name!r} (names: {hist_names})")
        if not any(
            isinstance(ev, RoomMemberEvent) and ev.state_key == b.user_id and ev.membership == "join"
            for ev in history
        ):
            raise CheckFailed(f"/messages history has no join of {b.user_id}")
        say(f"history matches: {len(hist_ids)} messages in /sync order, room create, name and B's join present")
        say(f"syncs: A={a.syncs} B={b.syncs}")
    finally:
        await a.close()
        await b.close()


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} CLIENT_URL", file=sys.stderr)
        return 2
    url = sys.argv[1].rstrip("/")

    # Last-resort guard: whatever happens, never outlive the budget by much.
    def on_alarm(_signum, _frame):
        print(f"FAIL: nio check still running after {BUDGET + 15:.0f}s, aborting", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(BUDGET) + 15)

    try:
        asyncio.run(run(url))
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
