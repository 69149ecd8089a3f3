#!/usr/bin/env node
// Two-user chat check against a Matrix homeserver, driven by matrix-js-sdk.
//
// Usage: node chat.mjs CLIENT_URL
//
// Registers two fresh users (A, B) through the SDK's interactive-auth helper
// (first request without auth, then m.login.dummy with the session the server
// handed out), logs B in again with /login, starts both sync loops, lets A
// create a named room and invite B, lets B join once the invite shows up in its
// sync, exchanges messages both ways and checks that each side sees the other
// side's messages through its sync loop, in order, plus the room name. Finally
// it pages back through /messages and checks the history against what sync
// delivered.
//
// Prints a transcript to stdout and exits 0 on success; on failure prints the
// reason to stderr and exits 1. Every wait is bounded. No E2EE.

import { randomBytes } from "node:crypto";

const TAG = "[js]";
const BUDGET_MS = Number(process.env.NEURITE_CLIENT_BUDGET ?? "60") * 1000;
const WAIT_MS = Number(process.env.NEURITE_CLIENT_WAIT ?? "20") * 1000;
const DEBUG = Boolean(process.env.NEURITE_CLIENT_DEBUG);
const POLL_MS = 5000; // /sync long-poll timeout
const ROUNDS = 3; // messages sent one at a time, each waiting for the reply
const BURST = 2; // then sent back to back without waiting
const HISTORY_PAGE = 4;
const HISTORY_MAX_PAGES = 25;

const started = Date.now();
const deadline = started + BUDGET_MS;

// The SDK logs a lot through console.log/info/debug/warn. Keep stdout for the
// transcript: SDK chatter goes to stderr only with NEURITE_CLIENT_DEBUG set;
// SDK errors (console.error) always go to stderr.
const sink = DEBUG ? (...args) => process.stderr.write(args.map(String).join(" ") + "\n") : () => {};
console.log = sink;
console.info = sink;
console.debug = sink;
console.trace = sink;
console.warn = sink;
const realError = console.error.bind(console);
console.error = (...args) => {
    if (DEBUG) return realError(...args);
    // Known harmless noise: the RTC session manager sees room state before
    // the room object exists. Anything else the SDK reports goes to stderr,
    // one compact line per call (errors without their stacks).
    if (String(args[0]).startsWith("[MatrixRTCSessionManager]")) return;
    const text = args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : String(a))).join(" ");
    process.stderr.write(`[sdk] ${text}\n`);
};

function say(line) {
    process.stdout.write(`${TAG} ${line}\n`);
}

class CheckFailed extends Error {}

function fail(message) {
    throw new CheckFailed(message);
}

function hex(n) {
    return randomBytes(n).toString("hex");
}

// Last-resort guard: never outlive the budget by much, whatever is pending.
const watchdog = setTimeout(() => {
    process.stderr.write(`FAIL: js check still running after ${(BUDGET_MS + 15000) / 1000}s, aborting\n`);
    process.exit(1);
}, BUDGET_MS + 15000);

let sdk;
try {
    sdk = await import("matrix-js-sdk");
} catch (err) {
    process.stderr.write(`FAIL: cannot load matrix-js-sdk (${err}); run tests/clients/install.sh\n`);
    process.exit(1);
}
const { createClient, ClientEvent, RoomEvent, SyncState, Direction, InteractiveAuth, MatrixError } = sdk;

function describe(err) {
    if (err instanceof MatrixError) {
        return `HTTP ${err.httpStatus} ${err.errcode ?? ""} ${err.data?.error ?? err.message}`.trim();
    }
    if (err instanceof Error) {
        let cause = "";
        for (let c = err.cause, depth = 0; c && depth < 4; c = c.cause, depth++) {
            cause += ` <- ${c.code ?? c.name ?? "cause"}: ${c.message ?? c}`;
        }
        return DEBUG ? `${err.stack}${cause}` : `${err.name}: ${err.message}${cause}`;
    }
    return String(err);
}

// Runs promise-returning fn with a timeout bounded by WAIT_MS and the budget.
async function bounded(what, fn, limitMs = WAIT_MS) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) fail(`overall budget of ${BUDGET_MS / 1000}s used up before: ${what}`);
    const ms = Math.min(limitMs, remaining);
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new CheckFailed(`timed out after ${(ms / 1000).toFixed(1)}s: ${what}`)), ms);
    });
    try {
        return await Promise.race([fn(), timeout]);
    } catch (err) {
        if (err instanceof CheckFailed) throw err;
        fail(`${what} failed: ${describe(err)}`);
    } finally {
        clearTimeout(timer);
    }
}

function makeFetch(baseUrl, label) {
    const origin = new URL(baseUrl).origin;
    return (input, init) => {
        const url = new URL(input instanceof Request ? input.url : String(input));
        if (url.origin !== origin) {
            // The SDK must only ever talk to the homeserver under test.
            return Promise.reject(new Error(`refusing request to ${url.origin} (only ${origin} is allowed)`));
        }
        if (DEBUG) process.stderr.write(`${TAG} ${label} ${init?.method ?? "GET"} ${url.pathname}${url.search}\n`);
        return fetch(input, init);
    };
}

class Peer {
    constructor(label, baseUrl) {
        this.label = label;
        this.baseUrl = baseUrl;
        this.localpart = `js${label.toLowerCase()}${hex(6)}`;
        this.password = randomBytes(18).toString("base64url");
        this.client = null;
        this.userId = null;
        this.deviceId = null;
        this.fromOthers = new Map(); // roomId -> [{id, body}] live messages from others, sync order
        this.seenIds = new Set();
        this.syncError = null;
        this.resets = 0;
    }

    anonymousClient() {
        return createClient({
            baseUrl: this.baseUrl,
            fetchFn: makeFetch(this.baseUrl, this.label),
            localTimeoutMs: WAIT_MS,
        });
    }

    async register() {
        const tmp = this.anonymousClient();
        let rejectStage;
        const unsupported = new Promise((_, reject) => {
            rejectStage = reject;
        });
        const auth = new InteractiveAuth({
            matrixClient: tmp,
            supportedStages: ["m.login.dummy"],
            doRequest: (authDict) =>
                tmp.registerRequest({
                    username: this.localpart,
                    password: this.password,
                    initial_device_display_name: `js ${this.label}`,
                    ...(authDict ? { auth: authDict } : {}),
                }),
            stateUpdated: (stage, status) =>
                rejectStage(
                    new CheckFailed(
                        `registration asked for stage ${stage} (${JSON.stringify(status)}); only m.login.dummy is supported`,
                    ),
                ),
            requestEmailToken: () => Promise.reject(new CheckFailed("registration asked for an email token")),
        });
        const res = await bounded(`${this.label} register ${this.localpart}`, () =>
            Promise.race([auth.attemptAuth(), unsupported]),
        );
        if (!res?.access_token || !res?.user_id || !res?.device_id) {
            fail(`${this.label} register: response lacks access_token/user_id/device_id: ${JSON.stringify(res)}`);
        }
        if (!res.user_id.startsWith(`@${this.localpart}:`)) {
            fail(`${this.label} register: user_id ${res.user_id} is not @${this.localpart}:<server>`);
        }
        this.userId = res.user_id;
        this.deviceId = res.device_id;
        this.accessToken = res.access_token;
        say(`${this.label} registered ${res.user_id} (device ${res.device_id})`);
    }

    async relogin() {
        const tmp = this.anonymousClient();
        const res = await bounded(`${this.label} login`, () =>
            tmp.loginRequest({
                type: "m.login.password",
                identifier: { type: "m.id.user", user: this.localpart },
                password: this.password,
                initial_device_display_name: `js ${this.label} login`,
            }),
        );
        if (res.user_id !== this.userId) fail(`${this.label} login: got user_id ${res.user_id}, expected ${this.userId}`);
        if (!res.access_token || !res.device_id) fail(`${this.label} login: response lacks access_token/device_id`);
        if (res.device_id === this.deviceId) {
            fail(`${this.label} login without device_id reused device ${res.device_id}; a new device was expected`);
        }
        this.deviceId = res.device_id;
        this.accessToken = res.access_token;
        say(`${this.label} logged in again as ${res.user_id} (device ${res.device_id})`);
    }

    async start() {
        this.client = createClient({
            baseUrl: this.baseUrl,
            userId: this.userId,
            deviceId: this.deviceId,
            accessToken: this.accessToken,
            fetchFn: makeFetch(this.baseUrl, this.label),
            localTimeoutMs: WAIT_MS,
        });
        this.client.on(RoomEvent.Timeline, (event, room, toStartOfTimeline, removed, data) => {
            if (toStartOfTimeline || removed || !data?.liveEvent || !room) return;
            if (event.getType() !== "m.room.message" || event.getSender() === this.userId) return;
            const id = event.getId();
            if (this.seenIds.has(id)) {
                this.syncError ??= new CheckFailed(`${this.label}: sync delivered event ${id} twice`);
                return;
            }
            this.seenIds.add(id);
            if (!this.fromOthers.has(room.roomId)) this.fromOthers.set(room.roomId, []);
            this.fromOthers.get(room.roomId).push({ id, body: event.getContent().body });
        });
        this.client.on(RoomEvent.TimelineReset, () => {
            this.resets += 1;
        });
        this.client.on(ClientEvent.Sync, (state, _prev, data) => {
            if (state === SyncState.Error) this.lastSyncError = data?.error;
        });
        await this.client.startClient({
            initialSyncLimit: 10,
            pollTimeout: POLL_MS,
            lazyLoadMembers: false,
            // Keep local echoes out of the live timeline so that the timeline
            // holds exactly what the server delivered, in server order.
            pendingEventOrdering: "detached",
        });
        await this.waitFor("the first sync (PREPARED)", () => this.client.isInitialSyncComplete());
        say(`${this.label} sync loop running`);
    }

    // Resolves once predicate() holds; re-checked after every sync and timeline event.
    waitFor(what, predicate) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) fail(`overall budget used up while ${this.label} waited for ${what}`);
        const ms = Math.min(WAIT_MS, remaining);
        return new Promise((resolve, reject) => {
            const client = this.client;
            const check = () => {
                let ok;
                try {
                    if (this.syncError) throw this.syncError;
                    ok = predicate();
                } catch (err) {
                    done();
                    reject(err);
                    return;
                }
                if (ok) {
                    done();
                    resolve();
                }
            };
            const timer = setTimeout(() => {
                done();
                let extra = "";
                if (this.lastSyncError) extra += `; last sync error: ${describe(this.lastSyncError)}`;
                if (this.resets) extra += `; the live timeline was reset ${this.resets}x (limited sync)`;
                extra += `; sync state ${client.getSyncState()}`;
                reject(new CheckFailed(`${this.label} did not see ${what} within ${(ms / 1000).toFixed(0)}s${extra}`));
            }, ms);
            const done = () => {
                clearTimeout(timer);
                client.off(ClientEvent.Sync, check);
                client.off(RoomEvent.Timeline, check);
            };
            client.on(ClientEvent.Sync, check);
            client.on(RoomEvent.Timeline, check);
            check();
        });
    }

    room(roomId) {
        return this.client.getRoom(roomId);
    }

    // The m.room.name content as this client's room state has it.
    stateName(roomId) {
        const ev = this.room(roomId)?.currentState.getStateEvents("m.room.name", "");
        return ev ? ev.getContent().name : undefined;
    }

    // Message events in the live timeline (server-confirmed only, see "detached").
    liveMessages(roomId) {
        const room = this.room(roomId);
        if (!room) return [];
        return room
            .getLiveTimeline()
            .getEvents()
            .filter((ev) => ev.getType() === "m.room.message")
            .map((ev) => ({ id: ev.getId(), sender: ev.getSender(), body: ev.getContent().body }));
    }

    others(roomId) {
        return this.fromOthers.get(roomId) ?? [];
    }

    async send(roomId, body) {
        const res = await bounded(`${this.label} send "${body}"`, () =>
            this.client.sendMessage(roomId, { msgtype: "m.text", body }),
        );
        if (!res?.event_id) fail(`${this.label} send: no event_id in ${JSON.stringify(res)}`);
        say(`${this.label} -> "${body}" (${res.event_id})`);
        return { id: res.event_id, body };
    }

    stop() {
        try {
            this.client?.stopClient();
        } catch {
            // best effort
        }
    }
}

function checkInOrder(label, seen, expected) {
    const got = seen.map((m) => `${m.id} "${m.body}"`);
    const want = expected.map((m) => `${m.id} "${m.body}"`);
    if (JSON.stringify(got) !== JSON.stringify(want)) {
        fail(`${label} saw the other side's messages as [${got.join(", ")}], expected [${want.join(", ")}]`);
    }
}

// Pages backwards through /messages, starting without a `from` token (latest
// events), following `end` until the start of the room.
async function fetchHistory(peer, roomId) {
    const events = [];
    let from = null;
    let pages = 0;
    for (;;) {
        pages += 1;
        if (pages > HISTORY_MAX_PAGES) fail(`/messages did not reach the start of the room in ${HISTORY_MAX_PAGES} pages`);
        const res = await bounded(`${peer.label} /messages page ${pages}`, () =>
            peer.client.createMessagesRequest(roomId, from, HISTORY_PAGE, Direction.Backward),
        );
        if (!Array.isArray(res?.chunk)) fail(`/messages page ${pages}: no chunk array in ${JSON.stringify(res)}`);
        if (res.chunk.length > HISTORY_PAGE) fail(`/messages returned ${res.chunk.length} events for limit=${HISTORY_PAGE}`);
        events.push(...res.chunk);
        if (res.chunk.length === 0 || !res.end) break;
        if (res.end === from) fail(`/messages returned end == from (${from}) with a non-empty chunk`);
        from = res.end;
    }
    events.reverse();
    say(`history: ${events.length} events in ${pages} /messages pages`);
    return events;
}

async function run(baseUrl) {
    say(`homeserver ${baseUrl}`);
    const a = new Peer("A", baseUrl);
    const b = new Peer("B", baseUrl);
    try {
        await a.register();
        await b.register();
        if (a.userId.split(":").slice(1).join(":") !== b.userId.split(":").slice(1).join(":")) {
            fail(`users on different servers: ${a.userId} ${b.userId}`);
        }
        await b.relogin();
        await a.start();
        await b.start();

        const roomName = `Neurite js check ${hex(3)}`;
        const created = await bounded("A createRoom", () =>
            a.client.createRoom({ name: roomName, visibility: "private" }),
        );
        const roomId = created?.room_id;
        if (typeof roomId !== "string" || !roomId.startsWith("!")) fail(`createRoom returned ${JSON.stringify(created)}`);
        say(`A created room ${roomId} named "${roomName}"`);

        await bounded("A invite B", () => a.client.invite(roomId, b.userId));
        say(`A invited ${b.userId}`);

        await b.waitFor(`the invite to ${roomId}`, () => b.room(roomId)?.getMyMembership() === "invite");
        const inviteName = b.stateName(roomId);
        if (inviteName !== undefined && inviteName !== roomName) {
            fail(`invite state names the room "${inviteName}", expected "${roomName}"`);
        }
        say(
            `B saw the invite through sync` +
                (inviteName !== undefined ? ` (invite state names it "${inviteName}")` : " (no name in invite state)"),
        );

        const joined = await bounded("B join", () => b.client.joinRoom(roomId));
        if (joined.roomId !== roomId) fail(`joinRoom resolved to ${joined.roomId}, expected ${roomId}`);
        say("B joined");

        await b.waitFor(
            `the joined room ${roomId} with name "${roomName}"`,
            () => b.room(roomId)?.getMyMembership() === "join" && b.stateName(roomId) === roomName,
        );
        if (b.room(roomId).name !== roomName) fail(`B's room.name is "${b.room(roomId).name}", expected "${roomName}"`);
        say(`B sees room name "${b.room(roomId).name}"`);

        await a.waitFor(`${b.userId} join ${roomId}`, () => a.room(roomId)?.getMember(b.userId)?.membership === "join");
        if (a.room(roomId).name !== roomName) fail(`A sees room name "${a.room(roomId).name}", expected "${roomName}"`);
        say(`A saw B join; A sees room name "${a.room(roomId).name}"`);

        const sentByA = [];
        const sentByB = [];

        // Conversation: each message waits for the previous one from the peer.
        for (let i = 1; i <= ROUNDS; i++) {
            let body = `js A says ${i} (${hex(2)})`;
            sentByA.push(await a.send(roomId, body));
            await b.waitFor(`A's message "${body}"`, () => b.others(roomId).length >= sentByA.length);
            checkInOrder("B", b.others(roomId), sentByA);
            say(`B <- "${body}"`);

            body = `js B replies ${i} (${hex(2)})`;
            sentByB.push(await b.send(roomId, body));
            await a.waitFor(`B's message "${body}"`, () => a.others(roomId).length >= sentByB.length);
            checkInOrder("A", a.others(roomId), sentByB);
            say(`A <- "${body}"`);
        }

        // Burst: both sides send several messages without waiting.
        for (let i = 1; i <= BURST; i++) sentByA.push(await a.send(roomId, `js A burst ${i}`));
        for (let i = 1; i <= BURST; i++) sentByB.push(await b.send(roomId, `js B burst ${i}`));
        await b.waitFor("A's burst", () => b.others(roomId).length >= sentByA.length);
        await a.waitFor("B's burst", () => a.others(roomId).length >= sentByB.length);
        checkInOrder("B", b.others(roomId), sentByA);
        checkInOrder("A", a.others(roomId), sentByB);
        say(`B <- burst [${sentByA.slice(ROUNDS).map((m) => `"${m.body}"`).join(", ")}]`);
        say(`A <- burst [${sentByB.slice(ROUNDS).map((m) => `"${m.body}"`).join(", ")}]`);

        // Both live timelines end up with all messages (own ones via remote
        // echo), in one and the same order.
        const total = sentByA.length + sentByB.length;
        const settled = (p) => p.liveMessages(roomId).length >= total && p.room(roomId).getPendingEvents().length === 0;
        await a.waitFor("all messages in its live timeline, own echoes included", () => settled(a));
        await b.waitFor("all messages in its live timeline, own echoes included", () => settled(b));
        const orderA = a.liveMessages(roomId).map((m) => m.id);
        const orderB = b.liveMessages(roomId).map((m) => m.id);
        if (JSON.stringify(orderA) !== JSON.stringify(orderB)) {
            fail(`A and B have different message orders: ${orderA.join(",")} vs ${orderB.join(",")}`);
        }
        const sentIds = new Set([...sentByA, ...sentByB].map((m) => m.id));
        if (orderA.length !== total || !orderA.every((id) => sentIds.has(id))) {
            fail(`live timeline message ids ${orderA.join(",")} differ from the sent ids ${[...sentIds].join(",")}`);
        }
        const ownA = a.liveMessages(roomId).filter((m) => m.sender === a.userId);
        const ownB = b.liveMessages(roomId).filter((m) => m.sender === b.userId);
        checkInOrder("A (own echo)", ownA, sentByA);
        checkInOrder("B (own echo)", ownB, sentByB);
        say(`both sides hold the same ${total} messages in the same order`);

        // History through /messages, read by B.
        const history = await fetchHistory(b, roomId);
        const histIds = history.filter((ev) => ev.type === "m.room.message").map((ev) => ev.event_id);
        if (JSON.stringify(histIds) !== JSON.stringify(orderA)) {
            fail(`/messages history order ${histIds.join(",")} differs from the sync order ${orderA.join(",")}`);
        }
        const types = history.map((ev) => ev.type);
        if (!types.includes("m.room.create")) fail(`/messages history did not reach m.room.create (types: ${types.join(",")})`);
        const names = history.filter((ev) => ev.type === "m.room.name").map((ev) => ev.content?.name);
        if (!names.includes(roomName)) fail(`/messages history has no m.room.name "${roomName}" (names: ${names.join(",")})`);
        const bJoin = history.some(
            (ev) => ev.type === "m.room.member" && ev.state_key === b.userId && ev.content?.membership === "join",
        );
        if (!bJoin) fail(`/messages history has no join of ${b.userId}`);
        for (const ev of history) {
            if (typeof ev.event_id !== "string" || typeof ev.sender !== "string" || typeof ev.origin_server_ts !== "number") {
                fail(`/messages event lacks event_id/sender/origin_server_ts: ${JSON.stringify(ev)}`);
            }
        }
        say(`history matches: ${histIds.length} messages in sync order, room create, name and B's join present`);
    } finally {
        a.stop();
        b.stop();
    }
}

const url = process.argv[2];
if (!url || process.argv.length !== 3) {
    process.stderr.write("usage: node chat.mjs CLIENT_URL\n");
    process.exit(2);
}

try {
    await run(url.replace(/\/+$/, ""));
    say(`PASS in ${((Date.now() - started) / 1000).toFixed(1)}s`);
    process.exitCode = 0;
} catch (err) {
    const reason = err instanceof CheckFailed ? err.message : `unexpected error: ${describe(err)}`;
    process.stderr.write(`FAIL: ${reason}\n`);
    process.exitCode = 1;
} finally {
    clearTimeout(watchdog);
    // stopClient() ends the sync loops, but SDK housekeeping timers may still
    // hold the event loop open: leave shortly with the exit code decided above.
    setTimeout(() => process.exit(process.exitCode ?? 1), 500).unref();
}
