// Encrypted messages through simplified sliding sync: two matrix-js-sdk 43
// clients with the Rust crypto stack, each syncing only through its own
// SlidingSync (client.startClient({slidingSync}), so SlidingSyncSdk drives
// the to_device and e2ee extensions, which carry the Olm-encrypted room
// keys, device list changes and one-time key counts). The room list must
// bring the room, the timeline must hold the messages, and every encrypted
// message must decrypt, both ways; a second device of bob's (also on sliding
// sync) appears later and must get the keys of messages sent after it.
import "fake-indexeddb/auto";
import * as sdk from "matrix-js-sdk";
import { SlidingSync, SlidingSyncEvent, SlidingSyncState } from "matrix-js-sdk/lib/sliding-sync.js";
import { api, envURL, fail, login, register, sendText, setTag, step, waitFor, waitForDecrypted } from "./e2ee_lib.mjs";

setTag("slidingsync-e2ee");
const BASE = envURL("MYELIN_URL");

// Element Web's list settings (SlidingSyncManager), plus encryption state.
const LIST = {
    ranges: [[0, 19]],
    timeline_limit: 10,
    required_state: [
        ["m.room.join_rules", ""],
        ["m.room.avatar", ""],
        ["m.room.name", ""],
        ["m.room.encryption", ""],
        ["m.room.create", ""],
        ["m.room.member", "$ME"],
        ["m.room.member", "$LAZY"],
    ],
};
const SUBSCRIPTION = { timeline_limit: 50, required_state: [["*", "*"], ["m.room.member", "$LAZY"]] };

let syncErrors = 0;
const clients = [];

// startSliding starts a client whose only sync is sliding sync.
async function startSliding(name, creds) {
    const client = sdk.createClient({ baseUrl: BASE, userId: creds.user_id, accessToken: creds.access_token, deviceId: creds.device_id });
    await client.initRustCrypto({ useIndexedDB: false });
    const ss = new SlidingSync(BASE, new Map([["room_list", LIST]]), SUBSCRIPTION, client, 3_000);
    ss.on(SlidingSyncEvent.Lifecycle, (state, _resp, err) => {
        if (state === SlidingSyncState.RequestFinished && err) {
            syncErrors++;
            console.error(`[slidingsync-e2ee] ${name} sync error: ${err}`);
        }
    });
    await client.startClient({ slidingSync: ss });
    await waitFor(`${name}'s first sliding sync answer`, () => client.getSyncState() === "PREPARED" || client.getSyncState() === "SYNCING");
    clients.push([client, ss]);
    step(`${name} (${creds.user_id} / ${creds.device_id}) is on sliding sync`);
    return client;
}

const aliceCreds = await register(BASE, "ssealice");
const bobCreds = await register(BASE, "ssebob");
const alice = await startSliding("alice", aliceCreds);
const bob = await startSliding("bob", bobCreds);

// Both devices' keys must be on the server before alice encrypts for bob.
for (const c of [alice, bob]) {
    await waitFor(`${c.getUserId()}'s device keys uploaded`, async () => {
        const q = await api(BASE, "POST", "/keys/query", { device_keys: { [c.getUserId()]: [] } }, c.getAccessToken());
        return q.device_keys?.[c.getUserId()]?.[c.getDeviceId()];
    });
}

const { room_id: roomId } = await alice.createRoom({
    name: "Sliding secrets",
    invite: [bob.getUserId()],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
});
await waitFor("bob's invite in his room list", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
step("bob's room list shows the invite");
await bob.joinRoom(roomId);
await waitFor("alice to see bob joined", () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join");
await waitFor("alice's room to know it is encrypted", () => alice.getCrypto().isEncryptionEnabledInRoom(roomId));
step("bob joined the encrypted room");

await sendText(alice, roomId, "secret from alice");
await waitForDecrypted("bob", bob, roomId, "secret from alice");
await sendText(bob, roomId, "secret from bob");
await waitForDecrypted("alice", alice, roomId, "secret from bob");

// The room's timeline through the list: both messages, in order.
const bodies = bob.getRoom(roomId).getLiveTimeline().getEvents()
    .filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body);
if (bodies.indexOf("secret from alice") < 0 || bodies.indexOf("secret from alice") > bodies.indexOf("secret from bob")) {
    fail(`bob's timeline is ${JSON.stringify(bodies)}`);
}
step("bob's timeline holds both messages in order");

// A new device of bob's: its keys reach alice through e2ee's device_lists,
// and alice's next message's room key reaches it through to_device.
const bob2 = await startSliding("bob's second device", await login(BASE, "ssebob"));
await waitFor("alice to learn of bob's second device", async () => {
    const devices = await alice.getCrypto().getUserDeviceInfo([bob.getUserId()], false);
    return devices.get(bob.getUserId())?.has(bob2.getDeviceId());
});
step("alice learned of bob's second device (device_lists.changed)");
await waitFor("bob2 to have the room", () => bob2.getRoom(roomId));
await sendText(alice, roomId, "secret for both devices");
await waitForDecrypted("bob's second device", bob2, roomId, "secret for both devices");
await waitForDecrypted("bob", bob, roomId, "secret for both devices");

for (const [c, ss] of clients) {
    ss.stop();
    c.stopClient();
}
if (syncErrors > 0) fail(`${syncErrors} sliding sync errors`);
console.log("[slidingsync-e2ee] PASS");
process.exit(0);
