#!/usr/bin/env node
// Edits and threads as matrix-js-sdk reads them from a Matrix homeserver.
//
// Usage: node threads.mjs CLIENT_URL
//
// One user registers (m.login.dummy, open registration), creates a room and, without a sync
// loop, sends a message and two edits of it, a thread root with two replies (the second
// edited), and one last message. Then a second device of the same user starts a sync loop
// with thread support whose first sync holds only that last message, so everything the SDK
// knows of the edits and the thread comes from the server's bundled aggregations:
//
// 1. the message fetched with `/event` and read through the SDK's event mapper shows its
//    latest edit (`unsigned.m.relations.m.replace`, the whole replacement event);
// 2. the room's thread list (`/threads`, all and participated) holds the thread root;
// 3. the thread has 2 replies, its latest reply showing its own bundled edit
//    (`m.thread.latest_event`, `count`);
// 4. paging the thread's timeline (`/relations`, with `recurse` when advertised) yields
//    both replies.
//
// Prints a transcript to stdout and exits 0 on success; on failure prints the reason to
// stderr and exits 1. Every wait is bounded.

import { randomBytes } from "node:crypto";

const TAG = "[js-threads]";
const WAIT_MS = Number(process.env.NEURITE_CLIENT_WAIT ?? "20") * 1000;
const DEBUG = Boolean(process.env.NEURITE_CLIENT_DEBUG);

const sink = DEBUG ? (...args) => process.stderr.write(args.map(String).join(" ") + "\n") : () => {};
console.log = sink;
console.info = sink;
console.debug = sink;
console.trace = sink;
console.warn = sink;
if (!DEBUG) console.error = sink;

function say(line) {
    process.stdout.write(`${TAG} ${line}\n`);
}

class CheckFailed extends Error {}

function check(ok, message) {
    if (!ok) throw new CheckFailed(message);
}

const watchdog = setTimeout(() => {
    process.stderr.write(`FAIL: still running after ${(4 * WAIT_MS) / 1000}s, aborting\n`);
    process.exit(1);
}, 4 * WAIT_MS);

const baseUrl = process.argv[2];
if (!baseUrl) {
    process.stderr.write("usage: node threads.mjs CLIENT_URL\n");
    process.exit(2);
}
const origin = new URL(baseUrl).origin;
const fetchFn = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.origin !== origin) {
        return Promise.reject(new Error(`refusing request to ${url.origin} (only ${origin} is allowed)`));
    }
    if (DEBUG) process.stderr.write(`${TAG} ${init?.method ?? "GET"} ${url.pathname}${url.search}\n`);
    return fetch(input, init);
};

let sdk;
try {
    sdk = await import("matrix-js-sdk");
} catch (err) {
    process.stderr.write(`FAIL: cannot load matrix-js-sdk (${err}); run tests/clients/install.sh\n`);
    process.exit(1);
}
const { createClient, ClientEvent, Direction } = sdk;

// Resolves once predicate() holds, checked on every sync and every 50 ms; fails after WAIT_MS.
function waitFor(client, what, predicate) {
    return new Promise((resolve, reject) => {
        const started = Date.now();
        const tick = () => {
            let ok = false;
            try {
                ok = predicate();
            } catch (err) {
                clearInterval(timer);
                reject(err);
                return;
            }
            if (ok) {
                clearInterval(timer);
                client.off(ClientEvent.Sync, tick);
                resolve();
            } else if (Date.now() - started > WAIT_MS) {
                clearInterval(timer);
                client.off(ClientEvent.Sync, tick);
                reject(new CheckFailed(`timed out after ${WAIT_MS / 1000}s waiting for ${what}`));
            }
        };
        const timer = setInterval(tick, 50);
        client.on(ClientEvent.Sync, tick);
        tick();
    });
}

const text = (body) => ({ msgtype: "m.text", body });
const edit = (target, body) => ({
    msgtype: "m.text",
    body: `* ${body}`,
    "m.new_content": text(body),
    "m.relates_to": { rel_type: "m.replace", event_id: target },
});
const threadReply = (root, body) => ({
    ...text(body),
    "m.relates_to": { rel_type: "m.thread", event_id: root },
});

let reader;
try {
    const username = `jsthreads${randomBytes(6).toString("hex")}`;
    const password = randomBytes(18).toString("base64url");
    const anon = createClient({ baseUrl, fetchFn, localTimeoutMs: WAIT_MS });
    const reg = await anon.registerRequest({ username, password, auth: { type: "m.login.dummy" } });
    const writer = createClient({
        baseUrl,
        fetchFn,
        userId: reg.user_id,
        deviceId: reg.device_id,
        accessToken: reg.access_token,
        localTimeoutMs: WAIT_MS,
    });
    say(`registered ${reg.user_id}`);

    const { room_id: roomId } = await writer.createRoom({ preset: "private_chat", name: "threads" });
    const send = async (content) => (await writer.sendEvent(roomId, "m.room.message", content)).event_id;
    const original = await send(text("original"));
    await send(edit(original, "edited once"));
    const latestEdit = await send(edit(original, "edited twice"));
    const root = await send(text("thread root"));
    const reply1 = await send(threadReply(root, "first reply"));
    const reply2 = await send(threadReply(root, "second reply"));
    await send(edit(reply2, "second reply, edited"));
    await send(text("last"));
    say("sent a message with two edits, a thread of two replies (the second edited), one more message");

    const login = await anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password,
    });
    reader = createClient({
        baseUrl,
        fetchFn,
        userId: login.user_id,
        deviceId: login.device_id,
        accessToken: login.access_token,
        localTimeoutMs: WAIT_MS,
        threadSupport: true,
    });
    await reader.startClient({ initialSyncLimit: 1, pollTimeout: 5000, threadSupport: true });
    await waitFor(reader, "the first sync", () => reader.isInitialSyncComplete());
    check(reader.supportsThreads(), "the SDK does not think the server supports threads");
    const room = reader.getRoom(roomId);
    check(room, `room ${roomId} missing after the first sync`);
    check(!room.findEventById(original) && !room.findEventById(root), "the first sync was not limited");

    // 1. The bundled edit.
    const raw = await reader.fetchRoomEvent(roomId, original);
    const edited = reader.getEventMapper()(raw);
    check(
        edited.replacingEventId() === latestEdit,
        `replacing event is ${edited.replacingEventId()}, expected ${latestEdit}`,
    );
    check(
        edited.getContent().body === "edited twice",
        `edited message reads ${JSON.stringify(edited.getContent().body)}`,
    );
    say("the message shows its latest edit from the bundled m.replace");

    // 2. The thread list.
    await room.createThreadsTimelineSets();
    await room.fetchRoomThreads();
    for (const [index, name] of [
        [0, "all"],
        [1, "participated"],
    ]) {
        const events = room.threadsTimelineSets[index]?.getLiveTimeline().getEvents() ?? [];
        check(
            events.some((e) => e.getId() === root),
            `thread list (${name}) lacks the root: ${events.map((e) => e.getId()).join(", ")}`,
        );
    }
    say("the thread list (all, participated) holds the thread root");

    // 3. The thread, from the bundled m.thread summary.
    await waitFor(reader, "the thread", () => room.getThread(root));
    const thread = room.getThread(root);
    await waitFor(reader, "the thread's first events", () => thread.initialEventsFetched);
    await waitFor(reader, "the thread's latest reply", () => thread.replyToEvent?.getId() === reply2);
    check(thread.length === 2, `thread has ${thread.length} replies, expected 2`);
    check(
        thread.replyToEvent.getContent().body === "second reply, edited",
        `latest reply reads ${JSON.stringify(thread.replyToEvent.getContent().body)}`,
    );
    say("the thread has 2 replies and its latest reply shows its edit");

    // 4. The thread's own timeline, paged from the server.
    const timeline = thread.liveTimeline;
    for (let i = 0; i < 5 && timeline.getPaginationToken(Direction.Backward); i++) {
        await reader.paginateEventTimeline(timeline, { backwards: true, limit: 10 });
    }
    const ids = timeline.getEvents().map((e) => e.getId());
    check(ids.includes(reply1) && ids.includes(reply2), `thread timeline holds ${ids.join(", ")}`);
    say("the thread timeline holds both replies");

    reader.stopClient();
    clearTimeout(watchdog);
    say("ok");
    process.exit(0);
} catch (err) {
    reader?.stopClient();
    const message = err instanceof CheckFailed ? err.message : `${err?.name}: ${err?.message ?? err}`;
    process.stderr.write(`FAIL: ${message}\n`);
    process.exit(1);
}
