// Real-client end-to-end encryption scenario against a running Myelin.
//
// Two matrix-js-sdk clients with the Rust crypto stack (WASM) talk through the
// server at MYELIN_URL:
//   1. A and B share an encrypted room; A's message decrypts for B.
//   2. B logs in a second device; A's next message decrypts on both of B's devices.
//   3. A and B bootstrap cross-signing; B verifies A interactively (SAS over to-device).
//   4. A creates a key backup; a fresh device of A restores it and decrypts the earlier history.
// Any decryption failure or timeout exits non-zero. Progress goes to stdout, one line per step.
import {
    backUpSessions, bootstrapCrossSigning, envURL, fail, login, register, restoreAndReadHistory,
    sendText, setTag, startClient, step, verifyBySas, waitFor, waitForDecrypted,
} from "./e2ee_lib.mjs";

setTag("e2ee");
const BASE = envURL("MYELIN_URL");

async function main() {
    const suffix = Date.now().toString(36);
    const [aUser, bUser] = [`alice${suffix}`, `bob${suffix}`];
    const aCreds = await register(BASE, aUser);
    const bCreds = await register(BASE, bUser);
    const alice = await startClient("A", BASE, aCreds);
    const bob = await startClient("B", BASE, bCreds);

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
    const b2Creds = await login(BASE, bUser);
    const bob2 = await startClient("B2", BASE, b2Creds);
    await waitFor("A to learn B's second device", async () => {
        const devices = await alice.getCrypto().getUserDeviceInfo([bCreds.user_id], true);
        return devices.get(bCreds.user_id)?.has(b2Creds.device_id);
    });
    sessions.push(await sendText(alice, roomId, "hello both devices"));
    await waitForDecrypted("B", bob, roomId, "hello both devices");
    await waitForDecrypted("B2", bob2, roomId, "hello both devices");

    // 3. Cross-signing, then B verifies A.
    await bootstrapCrossSigning([alice, aUser], [bob, bUser]);
    step("A and B bootstrapped cross-signing");
    await verifyBySas(bob, alice);
    step("B verified A (SAS) and trusts A's cross-signing identity");

    // 4. Key backup, restored on a fresh device of A.
    const [version, backupKey] = await backUpSessions(alice, roomId, sessions);
    const a2Creds = await login(BASE, aUser);
    const alice2 = await startClient("A2", BASE, a2Creds);
    await restoreAndReadHistory("A2", alice2, roomId, version, backupKey, ["hello bob", "hello both devices"]);

    for (const c of [alice, alice2, bob, bob2]) c.stopClient();
    step("PASS");
    process.exit(0);
}

main().catch((err) => fail(err?.stack ?? String(err)));
