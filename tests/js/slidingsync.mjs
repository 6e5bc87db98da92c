// Simplified sliding sync scenario with matrix-js-sdk's own SlidingSync client,
// configured the way Element Web does it: a room list with timeline_limit 1 and
// short required_state, and a room subscription (timeline_limit 50, all state,
// lazy members) for the open room. SlidingSync sends a subscription once and
// omits it from later requests until it is dropped with unsubscribe_rooms, so
// the server must remember it for the connection.
//
// alice opens a room, whose history must then be in order. While her sync is
// held back (a slow network), charlie joins with a display name, bob changes
// the topic and sends 5 messages. The scenario fails unless alice's client
// then has all 5 messages, the topic and charlie's display name. Progress goes to stdout, one line per step.
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { SlidingSync, SlidingSyncEvent, SlidingSyncState } from "matrix-js-sdk/lib/sliding-sync.js";

const BASE = process.env.MYELIN_URL;
if (!BASE) {
    console.error("MYELIN_URL is not set");
    process.exit(2);
}
logger.setLevel(process.env.SS_DEBUG ? "debug" : "error");

const STEP_TIMEOUT_MS = 30_000;
const step = (msg) => console.log(`[slidingsync] ${msg}`);

function fail(msg) {
    console.error(`[slidingsync] FAIL: ${msg}`);
    process.exit(1);
}

async function api(method, path, body, token) {
    const res = await fetch(`${BASE}/_matrix/client/v3${path}`, {
        method,
        headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
}

async function register(user) {
    return api("POST", "/register", { username: user, password: `password-${user}-ss`, auth: { type: "m.login.dummy" } });
}

async function waitFor(what, cond, timeoutMs = STEP_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > deadline) fail(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

// A fetch that records sliding sync request bodies and can hold new sync
// requests back (gate closed), as a throttled background tab would.
const syncBodies = [];
let gateOpen = true;
let openGate = () => {};
let gate = Promise.resolve();
function closeGate() {
    gateOpen = false;
    gate = new Promise((r) => (openGate = () => ((gateOpen = true), r())));
}
async function gatedFetch(url, init) {
    if (String(url).includes("simplified_msc3575/sync")) {
        if (!gateOpen) await gate;
        syncBodies.push(JSON.parse(init?.body ?? "{}"));
    }
    return fetch(url, init);
}

// Element Web's settings (SlidingSyncManager).
const LIST = {
    ranges: [[0, 19]],
    timeline_limit: 1,
    required_state: [
        ["m.room.join_rules", ""],
        ["m.room.avatar", ""],
        ["m.room.tombstone", ""],
        ["m.room.encryption", ""],
        ["m.room.create", ""],
        ["m.room.member", "$ME"],
    ],
};
const SUBSCRIPTION = {
    timeline_limit: 50,
    required_state: [
        ["*", "*"],
        ["m.room.member", "$ME"],
        ["m.room.member", "$LAZY"],
    ],
};

const alice = await register("ssalice");
const bob = await register("ssbob");
const charlie = await register("sscharlie");
await api("PUT", `/profile/${encodeURIComponent(charlie.user_id)}/displayname`, { displayname: "Charlie Display" }, charlie.access_token);
const { room_id: roomId } = await api(
    "POST",
    "/createRoom",
    { preset: "public_chat", name: "Sliding", topic: "first topic", invite: [alice.user_id] },
    bob.access_token,
);
await api("POST", `/join/${encodeURIComponent(roomId)}`, {}, alice.access_token);
for (const body of ["before 1", "before 2"]) {
    await api("PUT", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${body.replace(" ", "")}`, { msgtype: "m.text", body }, bob.access_token);
}
step(`bob created ${roomId}; alice joined; bob sent 2 messages`);

const client = sdk.createClient({
    baseUrl: BASE,
    userId: alice.user_id,
    accessToken: alice.access_token,
    deviceId: alice.device_id,
    fetchFn: gatedFetch,
});
const slidingSync = new SlidingSync(BASE, new Map([["room_list", LIST]]), SUBSCRIPTION, client, 5_000);
let syncErrors = 0;
slidingSync.on(SlidingSyncEvent.Lifecycle, (state, _resp, err) => {
    if (state === SlidingSyncState.RequestFinished && err) {
        syncErrors++;
        console.error(`[slidingsync] sync error: ${err}`);
    }
});
await client.startClient({ slidingSync });
const room = await waitFor("the room in alice's client", () => client.getRoom(roomId));
step("alice's client has the room from the list");

// Open the room (Element Web's setRoomVisible) and wait until the
// subscription was answered: the timeline now holds more than the list's 1 event.
slidingSync.modifyRoomSubscriptions(new Set([roomId]));
await waitFor("the subscribed room's history", () => room.getLiveTimeline().getEvents().some((e) => e.getType() === "m.room.create"));
const subscribedAt = syncBodies.findIndex((b) => b.room_subscriptions?.[roomId]);
await waitFor("a later request without the subscription", () => syncBodies.length > subscribedAt + 1);
if (syncBodies.slice(subscribedAt + 1).some((b) => b.room_subscriptions)) {
    fail("SlidingSync re-sent the subscription: the scenario does not exercise the sticky subscription");
}
step("the subscription was sent once and omitted from the next request");
// Opening the room expanded its timeline from the list's 1 event: the
// history must come before that event, not after it.
const order = room.getLiveTimeline().getEvents().map((e) => e.getContent().body ?? e.getType());
if (order[0] !== "m.room.create" || order.indexOf("before 1") > order.indexOf("before 2") || order.at(-1) !== "before 2") {
    fail(`timeline out of order after opening the room: ${order.join(", ")}`);
}
step("the room's history is in order");

// Events arrive while alice's sync is held back.
closeGate();
await api("POST", `/join/${encodeURIComponent(roomId)}`, {}, charlie.access_token);
await api("PUT", `/rooms/${encodeURIComponent(roomId)}/state/m.room.topic/`, { topic: "second topic" }, bob.access_token);
const sent = [];
for (let i = 1; i <= 5; i++) {
    const body = `quick ${i}`;
    const { event_id } = await api("PUT", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/q${i}`, { msgtype: "m.text", body }, bob.access_token);
    sent.push({ event_id, body });
}
step("charlie joined, bob changed the topic and sent 5 messages");
openGate();

const timelineIds = () => new Set(room.getLiveTimeline().getEvents().map((e) => e.getId()));
const last = sent[sent.length - 1].event_id;
await waitFor("bob's last message", () => timelineIds().has(last));
// Give a trailing response a moment, then check everything at once.
await new Promise((r) => setTimeout(r, 500));
const ids = timelineIds();
const missing = sent.filter((m) => !ids.has(m.event_id)).map((m) => m.body);
const topic = room.currentState.getStateEvents("m.room.topic", "")?.getContent()?.topic;
const member = room.getMember(charlie.user_id);
slidingSync.stop();
client.stopClient();

const problems = [];
if (missing.length > 0) problems.push(`messages missing from alice's timeline: ${missing.join(", ")}`);
if (topic !== "second topic") problems.push(`topic is ${JSON.stringify(topic)}, want "second topic"`);
if (member?.name !== "Charlie Display") problems.push(`charlie shows as ${JSON.stringify(member?.name)}, want "Charlie Display"`);
if (syncErrors > 0) problems.push(`${syncErrors} sync errors`);
if (problems.length > 0) fail(problems.join("; "));
step("alice saw all 5 messages, the new topic and charlie's display name");
console.log("[slidingsync] PASS");
process.exit(0);
