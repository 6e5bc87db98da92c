// Real-client end-to-end encryption scenario against a running Myelin.
//
// Two matrix-js-sdk clients with the Rust crypto stack (WASM) talk through the
// server at MYELIN_URL:
//   1. A and B share an encrypted room; A's message decrypts for B.
//   2. B logs in a second device; A's next message decrypts on both of B's devices.
//   3. A and B bootstrap cross-signing; B verifies A interactively (SAS over to-device).
//   4. A creates a key backup; a fresh device of A restores it and decrypts the earlier history.
// Any decryption failure or timeout exits non-zero. Progress goes to stdout, one line per step.
import "fake-indexeddb/auto";
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/CryptoEvent.js";
import { VerificationPhase, VerificationRequestEvent, VerifierEvent } from "matrix-js-sdk/lib/crypto-api/verification.js";

const BASE = process.env.MYELIN_URL;
if (!BASE) {
    console.error("MYELIN_URL is not set");
    process.exit(2);
}
logger.setLevel(process.env.E2EE_DEBUG ? "debug" : "error");

const STEP_TIMEOUT_MS = 60_000;
const step = (msg) => console.log(`[e2ee] ${msg}`);

function fail(msg) {
    console.error(`[e2ee] FAIL: ${msg}`);
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

const password = (user) => `password-${user}-e2ee`;

async function register(user) {
    return api("POST", "/register", { username: user, password: password(user), auth: { type: "m.login.dummy" } });
}

async function login(user) {
    return api("POST", "/login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user },
        password: password(user),
    });
}

// waitFor polls cond (sync or async) until it returns a truthy value.
async function waitFor(what, cond, timeoutMs = STEP_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > deadline) fail(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

async function startClient(name, creds) {
    const client = sdk.createClient({
        baseUrl: BASE,
        userId: creds.user_id,
        accessToken: creds.access_token,
        deviceId: creds.device_id,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        if (state === "ERROR") console.error(`[e2ee] ${name} sync error: ${data?.error}`);
    });
    await client.startClient({ initialSyncLimit: 50 });
    await waitFor(`${name} initial sync`, () => client.isInitialSyncComplete());
    step(`${name} (${creds.user_id} / ${creds.device_id}) is syncing`);
    return client;
}

// waitForDecrypted waits until the client's timeline of roomId holds a decrypted
// m.room.message with the given body. A permanent decryption failure after the
// deadline is reported with its reason.
async function waitForDecrypted(name, client, roomId, body) {
    let lastFailure = null;
    await waitFor(`${name} to decrypt "${body}"`, async () => {
        const room = client.getRoom(roomId);
        if (!room) return false;
        for (const ev of room.getLiveTimeline().getEvents()) {
            if (ev.getWireType() !== "m.room.encrypted") continue;
            await client.decryptEventIfNeeded(ev);
            if (ev.isDecryptionFailure()) {
                lastFailure = ev.decryptionFailureReason;
                continue;
            }
            if (ev.getType() === "m.room.message" && ev.getContent().body === body) return true;
        }
        return false;
    }).catch(() => fail(`${name} could not decrypt "${body}" (last failure: ${lastFailure})`));
    step(`${name} decrypted "${body}"`);
}

async function sendText(client, roomId, body) {
    const { event_id: eventId } = await client.sendTextMessage(roomId, body);
    const raw = await api("GET", `/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(eventId)}`, undefined, client.getAccessToken());
    if (raw.type !== "m.room.encrypted") fail(`"${body}" went out unencrypted (type ${raw.type})`);
    return raw.content.session_id;
}

const uiaPassword = (user) => async (makeRequest) => {
    await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user }, password: password(user) });
};

// verifyBySas runs an interactive SAS verification: `verifier` (B) verifies `target`'s device.
async function verifyBySas(verifier, target) {
    const incoming = new Promise((resolve) => target.on(CryptoEvent.VerificationRequestReceived, resolve));
    const request = await verifier.getCrypto().requestDeviceVerification(target.getUserId(), target.getDeviceId());
    const theirRequest = await Promise.race([incoming, new Promise((_, rej) => setTimeout(() => rej(new Error("no verification request arrived")), STEP_TIMEOUT_MS))]);
    await theirRequest.accept();
    await waitFor("verification ready", () => request.phase === VerificationPhase.Ready);
    const sasVerifier = await request.startVerification("m.sas.v1");
    const confirmSas = (v) => v.on(VerifierEvent.ShowSas, (sas) => sas.confirm());
    confirmSas(sasVerifier);
    const theirVerifierReady = waitFor("their verifier", () => theirRequest.verifier);
    const ours = sasVerifier.verify();
    const theirVerifier = await theirVerifierReady;
    confirmSas(theirVerifier);
    await Promise.all([ours, theirVerifier.verify()]);
    await waitFor("verification done", () => request.phase === VerificationPhase.Done && theirRequest.phase === VerificationPhase.Done);
}

async function main() {
    const suffix = Date.now().toString(36);
    const [aUser, bUser] = [`alice${suffix}`, `bob${suffix}`];
    const aCreds = await register(aUser);
    const bCreds = await register(bUser);
    const alice = await startClient("A", aCreds);
    const bob = await startClient("B", bCreds);

    // 1. Encrypted room, A → B.
    const { room_id: roomId } = await alice.createRoom({
        invite: [bCreds.user_id],
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await waitFor("B to see the invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
    await bob.joinRoom(roomId);
    await waitFor("A to see B joined", () => alice.getRoom(roomId)?.getMember(bCreds.user_id)?.membership === "join");
    step(`room ${roomId} is encrypted with A and B joined`);
    const sessions = [await sendText(alice, roomId, "hello bob")];
    await waitForDecrypted("B", bob, roomId, "hello bob");

    // 2. B's second device gets A's next message too.
    const b2Creds = await login(bUser);
    const bob2 = await startClient("B2", b2Creds);
    await waitFor("A to learn B's second device", async () => {
        const devices = await alice.getCrypto().getUserDeviceInfo([bCreds.user_id], true);
        return devices.get(bCreds.user_id)?.has(b2Creds.device_id);
    });
    sessions.push(await sendText(alice, roomId, "hello both devices"));
    await waitForDecrypted("B", bob, roomId, "hello both devices");
    await waitForDecrypted("B2", bob2, roomId, "hello both devices");

    // 3. Cross-signing, then B verifies A.
    await alice.getCrypto().bootstrapCrossSigning({ authUploadDeviceSigningKeys: uiaPassword(aUser) });
    await bob.getCrypto().bootstrapCrossSigning({ authUploadDeviceSigningKeys: uiaPassword(bUser) });
    if (!(await alice.getCrypto().isCrossSigningReady())) fail("A's cross-signing is not ready");
    if (!(await bob.getCrypto().isCrossSigningReady())) fail("B's cross-signing is not ready");
    step("A and B bootstrapped cross-signing");
    await waitFor("B to see A's cross-signing keys", () => bob.getCrypto().userHasCrossSigningKeys(aCreds.user_id, true));
    await verifyBySas(bob, alice);
    await waitFor("B to trust A's identity", async () => {
        if ((await bob.getCrypto().getUserVerificationStatus(aCreds.user_id)).isCrossSigningVerified()) return true;
        // B's signature of A's master key may have been uploaded after B last
        // downloaded A's keys: fetch them again rather than wait for a device-list change.
        await bob.getCrypto().getUserDeviceInfo([aCreds.user_id], true);
        return false;
    });
    step("B verified A (SAS) and trusts A's cross-signing identity");

    // 4. Key backup, restored on a fresh device of A.
    await alice.getCrypto().resetKeyBackup();
    const version = await waitFor("A's backup to be active", () => alice.getCrypto().getActiveSessionBackupVersion());
    await waitFor("A's room keys to reach the backup", async () => {
        for (const sessionId of sessions) {
            const res = await fetch(`${BASE}/_matrix/client/v3/room_keys/keys/${encodeURIComponent(roomId)}/${encodeURIComponent(sessionId)}?version=${version}`,
                { headers: { Authorization: `Bearer ${aCreds.access_token}` } });
            if (res.status !== 200) return false;
        }
        return true;
    });
    step(`A backed up its ${new Set(sessions).size} megolm session(s) in backup version ${version}`);
    const backupKey = await alice.getCrypto().getSessionBackupPrivateKey();
    if (!backupKey) fail("A has no backup private key");

    const a2Creds = await login(aUser);
    const alice2 = await startClient("A2", a2Creds);
    await alice2.getCrypto().storeSessionBackupPrivateKey(backupKey, version);
    const restored = await alice2.getCrypto().restoreKeyBackup();
    step(`A2 restored ${restored.imported} of ${restored.total} keys from the backup`);
    const history = await api("GET", `/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=100`, undefined, a2Creds.access_token);
    const mapper = alice2.getEventMapper();
    const bodies = [];
    for (const raw of history.chunk) {
        if (raw.type !== "m.room.encrypted") continue;
        const ev = mapper({ ...raw, room_id: roomId });
        await alice2.decryptEventIfNeeded(ev);
        if (ev.isDecryptionFailure()) fail(`A2 could not decrypt ${raw.event_id}: ${ev.decryptionFailureReason}`);
        bodies.push(ev.getContent().body);
    }
    for (const want of ["hello bob", "hello both devices"]) {
        if (!bodies.includes(want)) fail(`A2's restored history lacks "${want}" (got ${JSON.stringify(bodies)})`);
    }
    step("A2 decrypted the earlier history from the backup");

    for (const c of [alice, alice2, bob, bob2]) c.stopClient();
    step("PASS");
    process.exit(0);
}

main().catch((err) => fail(err?.stack ?? String(err)));
