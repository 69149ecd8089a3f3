#!/usr/bin/env python3
"""End-to-end encrypted two-user chat against a Matrix homeserver, driven by
matrix-nio with its encryption support (vodozemac).

Usage: e2ee_chat.py CLIENT_URL [CLIENT_URL_B]

Registers two fresh users (A, B), each with its own nio crypto store. With a
second URL, B lives on that homeserver, so the room, the keys and the
to-device messages all cross between the two servers. Each
side runs nio's key maintenance between syncs (upload its device and
one-time keys, query keys of users whose device lists changed, claim
one-time keys), as nio's own sync_forever does. A creates a room with
m.room.encryption and invites B; B joins. A sends an encrypted message: nio
claims B's one-time key, sends the megolm room key to B's device as an olm
to-device message, and sends an m.room.encrypted event. B must decrypt it
through /sync. Then B replies the same way and A must decrypt the reply.
Finally the raw events on the server are checked to hold only ciphertext.

Prints a transcript to stdout and exits 0 on success; on failure prints the
reason to stderr and exits 1. Every network wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
import urllib.parse

try:
    import aiohttp
    from nio import (
        AsyncClient,
        AsyncClientConfig,
        ErrorResponse,
        JoinResponse,
        KeysClaimResponse,
        KeysQueryResponse,
        KeysUploadResponse,
        MegolmEvent,
        RegisterResponse,
        RoomCreateResponse,
        RoomInviteResponse,
        RoomMemberEvent,
        RoomMessageText,
        RoomSendResponse,
        SyncResponse,
    )
    from nio.crypto import ENCRYPTION_ENABLED
except ImportError as exc:  # pragma: no cover - environment problem
    print(
        f"FAIL: cannot import matrix-nio ({exc}); run tests/clients/install.sh "
        "and use the NEURITE_PYTHON it prints",
        file=sys.stderr,
    )
    sys.exit(1)

TAG = "[nio-e2ee]"
BUDGET = float(os.environ.get("NEURITE_CLIENT_BUDGET", "60"))
WAIT = float(os.environ.get("NEURITE_CLIENT_WAIT", "20"))
POLL_MS = 2000


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
    def __init__(self, label: str, url: str, store_root: str) -> None:
        self.label = label
        self.url = url
        self.localpart = f"nioe2e{label.lower()}{secrets.token_hex(6)}"
        self.password = secrets.token_urlsafe(18)
        store = os.path.join(store_root, label)
        os.makedirs(store)
        config = AsyncClientConfig(
            encryption_enabled=True,
            store_sync_tokens=False,
            max_limit_exceeded=3,
            max_timeouts=1,
            request_timeout=WAIT,
        )
        self.client = AsyncClient(url, store_path=store, config=config)
        self.timeline: dict[str, list] = {}
        self.invites: set[str] = set()
        self.to_device_seen = 0
        self.syncs = 0

    @property
    def user_id(self) -> str:
        return self.client.user_id

    async def register(self) -> None:
        resp = await bounded(
            self.client.register(self.localpart, self.password, device_name=f"nio e2ee {self.label}"),
            f"{self.label} register",
        )
        expect(resp, RegisterResponse, f"{self.label} register")
        if self.client.olm is None:
            raise CheckFailed(f"{self.label}: nio did not load its crypto store after register")
        say(f"{self.label} registered {resp.user_id} (device {resp.device_id})")

    async def maintain_keys(self) -> None:
        """What nio's sync_forever does between syncs."""
        c = self.client
        if c.should_upload_keys:
            resp = await bounded(c.keys_upload(), f"{self.label} keys/upload")
            expect(resp, KeysUploadResponse, f"{self.label} keys/upload")
            say(f"{self.label} uploaded keys; one-time key counts {resp.signed_curve25519_count}")
        if c.should_query_keys:
            resp = await bounded(c.keys_query(), f"{self.label} keys/query")
            expect(resp, KeysQueryResponse, f"{self.label} keys/query")
        if c.should_claim_keys:
            users = c.get_users_for_key_claiming()
            resp = await bounded(c.keys_claim(users), f"{self.label} keys/claim")
            expect(resp, KeysClaimResponse, f"{self.label} keys/claim")
        await bounded(c.send_to_device_messages(), f"{self.label} sendToDevice")

    async def sync_once(self, timeout_ms: int) -> None:
        what = f"{self.label} /sync (timeout={timeout_ms}ms)"
        resp = await bounded(self.client.sync(timeout=timeout_ms), what, limit=timeout_ms / 1000 + 10)
        expect(resp, SyncResponse, what)
        self.syncs += 1
        self.to_device_seen += len(resp.to_device_events)
        self.invites.update(resp.rooms.invite.keys())
        for room_id, info in resp.rooms.join.items():
            self.timeline.setdefault(room_id, []).extend(info.timeline.events)
        await self.maintain_keys()

    async def wait_for(self, predicate, what: str) -> None:
        limit = time.monotonic() + WAIT
        while not predicate():
            now = time.monotonic()
            if now >= limit or now >= DEADLINE:
                raise CheckFailed(f"{self.label} did not see {what} within {WAIT:.0f}s")
            await self.sync_once(max(0, min(POLL_MS, int((limit - now) * 1000) - 1000)))

    def decrypted(self, room_id: str, sender: str) -> list[RoomMessageText]:
        out = []
        for ev in self.timeline.get(room_id, []):
            if isinstance(ev, MegolmEvent) and ev.sender == sender:
                # The room key may have arrived after the event: try again now.
                try:
                    ev = self.client.decrypt_event(ev)
                except Exception:  # noqa: BLE001 - still undecryptable
                    continue
            if isinstance(ev, RoomMessageText) and ev.sender == sender and ev.decrypted:
                out.append(ev)
        return out

    def joined(self, room_id: str, user_id: str) -> bool:
        return any(
            isinstance(ev, RoomMemberEvent) and ev.state_key == user_id and ev.membership == "join"
            for ev in self.timeline.get(room_id, [])
        )

    async def send(self, room_id: str, body: str) -> str:
        resp = await bounded(
            self.client.room_send(
                room_id,
                "m.room.message",
                {"msgtype": "m.text", "body": body},
                ignore_unverified_devices=True,
            ),
            f"{self.label} send {body!r}",
        )
        expect(resp, RoomSendResponse, f"{self.label} send {body!r}")
        say(f"{self.label} -> {body!r} encrypted ({resp.event_id})")
        return resp.event_id

    async def raw_event(self, room_id: str, event_id: str) -> dict:
        path = "/_matrix/client/v3/rooms/{}/event/{}".format(
            urllib.parse.quote(room_id, safe=""), urllib.parse.quote(event_id, safe="")
        )
        headers = {"Authorization": f"Bearer {self.client.access_token}"}

        async def get() -> dict:
            async with aiohttp.ClientSession() as session:
                async with session.get(self.url + path, headers=headers) as resp:
                    if resp.status != 200:
                        raise CheckFailed(f"GET {path}: HTTP {resp.status} {await resp.text()}")
                    return await resp.json()

        return await bounded(get(), f"{self.label} GET raw event {event_id}")

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.client.close(), 5)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


async def exchange(sender: Peer, receiver: Peer, room_id: str, body: str) -> None:
    before = len(receiver.decrypted(room_id, sender.user_id))
    event_id = await sender.send(room_id, body)
    await receiver.wait_for(
        lambda: len(receiver.decrypted(room_id, sender.user_id)) > before,
        f"{sender.label}'s encrypted message {body!r} decrypted",
    )
    got = receiver.decrypted(room_id, sender.user_id)[-1]
    if got.body != body or got.event_id != event_id:
        raise CheckFailed(
            f"{receiver.label} decrypted {got.body!r} ({got.event_id}), expected {body!r} ({event_id})"
        )
    say(f"{receiver.label} <- {body!r} decrypted")
    raw = await receiver.raw_event(room_id, event_id)
    if raw.get("type") != "m.room.encrypted" or body in json.dumps(raw):
        raise CheckFailed(f"the server holds the message in clear: {raw}")
    algorithm = raw.get("content", {}).get("algorithm")
    if algorithm != "m.megolm.v1.aes-sha2":
        raise CheckFailed(f"the stored event uses algorithm {algorithm!r}")


async def run(url: str, url_b: str, store_root: str) -> None:
    if not ENCRYPTION_ENABLED:
        raise CheckFailed("matrix-nio was installed without encryption support (matrix-nio[e2e])")
    say(f"homeserver {url}" if url == url_b else f"homeservers {url} (A) and {url_b} (B)")
    a = Peer("A", url, store_root)
    b = Peer("B", url_b, store_root)
    try:
        await a.register()
        await b.register()
        await a.sync_once(0)
        await b.sync_once(0)

        resp = await bounded(
            a.client.room_create(
                name=f"Neurite e2ee check {secrets.token_hex(3)}",
                initial_state=[
                    {
                        "type": "m.room.encryption",
                        "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                    }
                ],
            ),
            "A createRoom",
        )
        room_id = expect(resp, RoomCreateResponse, "A createRoom").room_id
        say(f"A created encrypted room {room_id}")
        expect(await bounded(a.client.room_invite(room_id, b.user_id), "A invite"), RoomInviteResponse, "A invite")
        await b.wait_for(lambda: room_id in b.invites, f"the invite to {room_id}")
        expect(await bounded(b.client.join(room_id), "B join"), JoinResponse, "B join")
        say("B joined")
        await b.wait_for(
            lambda: room_id in b.client.rooms and b.client.rooms[room_id].encrypted,
            "the room as encrypted",
        )
        await a.wait_for(lambda: a.joined(room_id, b.user_id), "B's join")
        say("A saw B join")

        await exchange(a, b, room_id, f"secret from A {secrets.token_hex(4)}")
        await exchange(b, a, room_id, f"secret reply from B {secrets.token_hex(4)}")
        await exchange(a, b, room_id, f"second secret from A {secrets.token_hex(4)}")
        say(f"to-device events seen: A={a.to_device_seen} B={b.to_device_seen}; syncs: A={a.syncs} B={b.syncs}")
        if b.to_device_seen == 0 or a.to_device_seen == 0:
            raise CheckFailed("room keys did not travel as to-device messages")
    finally:
        await a.close()
        await b.close()


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(f"usage: {sys.argv[0]} CLIENT_URL [CLIENT_URL_B]", file=sys.stderr)
        return 2
    url = sys.argv[1].rstrip("/")
    url_b = sys.argv[-1].rstrip("/")

    def on_alarm(_signum, _frame):
        print(f"FAIL: nio e2ee check still running after {BUDGET + 15:.0f}s, aborting", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(BUDGET) + 15)

    store_root = tempfile.mkdtemp(prefix="neurite-nio-e2ee-")
    try:
        asyncio.run(run(url, url_b, store_root))
    except CheckFailed as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - report anything unexpected as a failure
        print("FAIL: unexpected error", file=sys.stderr)
        traceback.print_exc()
        return 1
    finally:
        shutil.rmtree(store_root, ignore_errors=True)
    say(f"PASS in {time.monotonic() - START:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
