// Real-client E2EE scenario: matrix-js-sdk with Rust crypto against a running Myelin.
// Usage: node scenario.mjs <baseUrl>   (tests/e2ee_js_test.go starts the server and runs this)
// Exits non-zero if any step or any decryption fails.
//
// NOTE: written ahead of /sync and rooms (other engineers' issues); it has not yet
// run end to end against Myelin. Expect to adjust it when those land.
import * as sdk from "matrix-js-sdk";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/index.js";
import { VerificationPhase, VerifierEvent } from "matrix-js-sdk/lib/crypto-api/verification.js";

const baseUrl = process.argv[2];
if (!baseUrl) throw new Error("usage: node scenario.mjs <baseUrl>");
const timeout = (ms, what) => new Promise((_, rej) => setTimeout(() => rej(new Error("timed out: " + what)), ms));
const step = (s) => console.log("==", s);

async function register(name) {
  const c = sdk.createClient({ baseUrl });
  const r = await c.registerRequest({ username: name, password: "pw-" + name, auth: { type: "m.login.dummy" } });
  return { userId: r.user_id, password: "pw-" + name };
}

async function login(user, name) {
  const c = sdk.createClient({ baseUrl });
  const r = await c.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: name }, password: user.password });
  const client = sdk.createClient({ baseUrl, userId: r.user_id, accessToken: r.access_token, deviceId: r.device_id });
  await client.initRustCrypto({ useIndexedDB: false });
  const ready = new Promise((res) => client.once(sdk.ClientEvent.Sync, (state) => state === "PREPARED" && res()));
  await client.startClient({ initialSyncLimit: 50 });
  await Promise.race([ready, timeout(30000, name + " initial sync")]);
  return client;
}

async function waitForText(client, roomId, body) {
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const room = client.getRoom(roomId);
    for (const ev of room?.getLiveTimeline().getEvents() ?? []) {
      if (ev.getType() !== "m.room.message" && !ev.isEncrypted()) continue;
      await client.decryptEventIfNeeded(ev);
      if (ev.getContent().body === body) {
        if (ev.isDecryptionFailure()) throw new Error(`${client.getDeviceId()}: decryption failed for "${body}"`);
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${client.getUserId()}/${client.getDeviceId()} never decrypted "${body}"`);
}

const uia = (name, user) => async (makeRequest) =>
  makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: name }, password: user.password });

const A = await register("alice"), B = await register("bob");
const a1 = await login(A, "alice"), b1 = await login(B, "bob");

step("A and B in an encrypted room; A's message decrypts for B");
const { room_id: roomId } = await a1.createRoom({
  preset: "private_chat", invite: [B.userId],
  initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
});
await b1.joinRoom(roomId);
await a1.sendTextMessage(roomId, "first secret");
await waitForText(b1, roomId, "first secret");

step("B logs in a second device; A's next message decrypts on both");
const b2 = await login(B, "bob");
await a1.getCrypto().getUserDeviceInfo([B.userId], true);
await a1.sendTextMessage(roomId, "second secret");
await waitForText(b1, roomId, "second secret");
await waitForText(b2, roomId, "second secret");

step("cross-signing bootstrapped; B verifies A");
await a1.getCrypto().bootstrapCrossSigning({ authUploadDeviceSigningKeys: uia("alice", A) });
await b1.getCrypto().bootstrapCrossSigning({ authUploadDeviceSigningKeys: uia("bob", B) });
a1.on(CryptoEvent.VerificationRequestReceived, async (req) => {
  await req.accept();
  req.on("change", () => {
    if (req.verifier && !req._myelinStarted) {
      req._myelinStarted = true;
      req.verifier.on(VerifierEvent.ShowSas, (sas) => sas.confirm());
      req.verifier.verify().catch((e) => console.error("A verifier", e));
    }
  });
});
const request = await b1.getCrypto().requestDeviceVerification(A.userId, a1.getDeviceId());
await Promise.race([new Promise((res) => request.on("change", () => request.phase === VerificationPhase.Ready && res())), timeout(30000, "verification ready")]);
const verifier = await request.startVerification("m.sas.v1");
verifier.on(VerifierEvent.ShowSas, (sas) => sas.confirm());
await Promise.race([verifier.verify(), timeout(30000, "SAS verification")]);
const status = await b1.getCrypto().getUserVerificationStatus(A.userId);
if (!status.isCrossSigningVerified()) throw new Error("B does not see A as cross-signing verified");

step("key backup created; a fresh device of A restores it and decrypts history");
await a1.getCrypto().resetKeyBackup();
const backupKey = await a1.getCrypto().getSessionBackupPrivateKey();
const info = await a1.getCrypto().getKeyBackupInfo();
await a1.getCrypto().checkKeyBackupAndEnable();
await new Promise((r) => setTimeout(r, 3000)); // let the backup loop upload
const a2 = await login(A, "alice");
await a2.getCrypto().storeSessionBackupPrivateKey(backupKey, info.version);
await a2.getCrypto().restoreKeyBackup();
await a2.scrollback(a2.getRoom(roomId), 50);
await waitForText(a2, roomId, "first secret");

for (const c of [a1, a2, b1, b2]) c.stopClient();
console.log("PASS");
process.exit(0);
