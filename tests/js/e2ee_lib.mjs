// Helpers shared by the real-client E2EE scenarios (e2ee.mjs on one server,
// e2ee_federation.mjs on two): matrix-js-sdk clients with the Rust crypto
// stack, each talking to the server at its own base URL. Call setTag first:
// progress lines and failures carry it.
import "fake-indexeddb/auto";
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/CryptoEvent.js";
import { VerificationPhase, VerifierEvent } from "matrix-js-sdk/lib/crypto-api/verification.js";

logger.setLevel(process.env.E2EE_DEBUG ? "debug" : "error");

export const STEP_TIMEOUT_MS = 60_000;

let tag = "e2ee";
export const setTag = (t) => { tag = t; };
export const step = (msg) => console.log(`[${tag}] ${msg}`);

export function fail(msg) {
    console.error(`[${tag}] FAIL: ${msg}`);
    process.exit(1);
}

// envURL returns the base URL in environment variable name, or exits.
export function envURL(name) {
    const url = process.env[name];
    if (!url) {
        console.error(`${name} is not set`);
        process.exit(2);
    }
    return url;
}

export async function api(base, method, path, body, token) {
    const res = await fetch(`${base}/_matrix/client/v3${path}`, {
        method,
        headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
}

export const password = (user) => `password-${user}-e2ee`;

export async function register(base, user) {
    return api(base, "POST", "/register", { username: user, password: password(user), auth: { type: "m.login.dummy" } });
}

export async function login(base, user) {
    return api(base, "POST", "/login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user },
        password: password(user),
    });
}

// waitFor polls cond (sync or async) until it returns a truthy value; it
// throws once timeoutMs have passed.
export async function waitFor(what, cond, timeoutMs = STEP_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

export async function startClient(name, base, creds) {
    const client = sdk.createClient({
        baseUrl: base,
        userId: creds.user_id,
        accessToken: creds.access_token,
        deviceId: creds.device_id,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        if (state === "ERROR") console.error(`[${tag}] ${name} sync error: ${data?.error}`);
    });
    await client.startClient({ initialSyncLimit: 50 });
    await waitFor(`${name} initial sync`, () => client.isInitialSyncComplete());
    step(`${name} (${creds.user_id} / ${creds.device_id}) is syncing`);
    return client;
}

// waitForDecrypted waits until the client's timeline of roomId holds a decrypted
// m.room.message with the given body. A permanent decryption failure after the
// deadline is reported with its reason.
export async function waitForDecrypted(name, client, roomId, body) {
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

// sendText sends an encrypted text message and returns its Megolm session ID
// (read back from the sender's server: the event must have gone out encrypted).
export async function sendText(client, roomId, body) {
    const { event_id: eventId } = await client.sendTextMessage(roomId, body);
    const raw = await api(client.getHomeserverUrl(), "GET", `/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(eventId)}`, undefined, client.getAccessToken());
    if (raw.type !== "m.room.encrypted") fail(`"${body}" went out unencrypted (type ${raw.type})`);
    return raw.content.session_id;
}

export const uiaPassword = (user) => async (makeRequest) => {
    await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user }, password: password(user) });
};

// bootstrapCrossSigning sets up cross-signing for each [client, localpart].
export async function bootstrapCrossSigning(...users) {
    for (const [client, user] of users) {
        await client.getCrypto().bootstrapCrossSigning({ authUploadDeviceSigningKeys: uiaPassword(user) });
        if (!(await client.getCrypto().isCrossSigningReady())) fail(`${client.getUserId()}'s cross-signing is not ready`);
    }
}

// verifyBySas runs an interactive SAS verification: `verifier` verifies
// `target`'s device, then waits until it trusts target's cross-signing identity.
export async function verifyBySas(verifier, target) {
    const targetUser = target.getUserId();
    await waitFor(`${verifier.getUserId()} to see ${targetUser}'s cross-signing keys`, () => verifier.getCrypto().userHasCrossSigningKeys(targetUser, true));
    const incoming = new Promise((resolve) => target.on(CryptoEvent.VerificationRequestReceived, resolve));
    const request = await verifier.getCrypto().requestDeviceVerification(targetUser, target.getDeviceId());
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
    await waitFor(`${verifier.getUserId()} to trust ${targetUser}'s identity`, async () => {
        if ((await verifier.getCrypto().getUserVerificationStatus(targetUser)).isCrossSigningVerified()) return true;
        // The verifier's signature of the target's master key may have been
        // uploaded after it last downloaded the target's keys: fetch them
        // again rather than wait for a device-list change.
        await verifier.getCrypto().getUserDeviceInfo([targetUser], true);
        return false;
    });
}

// backUpSessions creates a key backup for client and waits until the given
// Megolm sessions of roomId are in it; it returns [version, private key].
export async function backUpSessions(client, roomId, sessions) {
    await client.getCrypto().resetKeyBackup();
    const version = await waitFor(`${client.getUserId()}'s backup to be active`, () => client.getCrypto().getActiveSessionBackupVersion());
    await waitFor(`${client.getUserId()}'s room keys to reach the backup`, async () => {
        for (const sessionId of sessions) {
            const res = await fetch(`${client.getHomeserverUrl()}/_matrix/client/v3/room_keys/keys/${encodeURIComponent(roomId)}/${encodeURIComponent(sessionId)}?version=${version}`,
                { headers: { Authorization: `Bearer ${client.getAccessToken()}` } });
            if (res.status !== 200) return false;
        }
        return true;
    });
    step(`${client.getUserId()} backed up its ${new Set(sessions).size} megolm session(s) in backup version ${version}`);
    const key = await client.getCrypto().getSessionBackupPrivateKey();
    if (!key) fail(`${client.getUserId()} has no backup private key`);
    return [version, key];
}

// restoreAndReadHistory restores the backup on a fresh client and decrypts
// roomId's history read from its server's /messages; it fails unless every
// encrypted event decrypts and the bodies include all of want.
export async function restoreAndReadHistory(name, client, roomId, version, key, want) {
    await client.getCrypto().storeSessionBackupPrivateKey(key, version);
    const restored = await client.getCrypto().restoreKeyBackup();
    step(`${name} restored ${restored.imported} of ${restored.total} keys from the backup`);
    const history = await api(client.getHomeserverUrl(), "GET", `/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=100`, undefined, client.getAccessToken());
    const mapper = client.getEventMapper();
    const bodies = [];
    for (const raw of history.chunk) {
        if (raw.type !== "m.room.encrypted") continue;
        const ev = mapper({ ...raw, room_id: roomId });
        await client.decryptEventIfNeeded(ev);
        if (ev.isDecryptionFailure()) fail(`${name} could not decrypt ${raw.event_id}: ${ev.decryptionFailureReason}`);
        bodies.push(ev.getContent().body);
    }
    for (const w of want) {
        if (!bodies.includes(w)) fail(`${name}'s restored history lacks "${w}" (got ${JSON.stringify(bodies)})`);
    }
    step(`${name} decrypted the earlier history from the backup`);
}
