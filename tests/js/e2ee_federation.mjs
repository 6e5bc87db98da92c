// Real-client end-to-end encryption across two federating servers.
//
// matrix-js-sdk clients with the Rust crypto stack (WASM): A on the server at
// MYELIN_URL_A, B on the server at MYELIN_URL_B. Every key, to-device message
// and room event between them crosses the federation.
//   1. A creates an encrypted room and invites B, who joins over federation.
//   2. A's message decrypts for B, B's for A.
//   3. A and B bootstrap cross-signing; B verifies A interactively (SAS over
//      to-device messages between the two servers) and trusts A's identity.
//   4. A creates a key backup on A's server; a fresh device of A restores it
//      and decrypts the earlier history, B's message included.
// Any decryption failure or timeout exits non-zero. Progress goes to stdout, one line per step.
import {
    backUpSessions, bootstrapCrossSigning, envURL, fail, login, register, restoreAndReadHistory,
    sendText, setTag, startClient, step, verifyBySas, waitFor, waitForDecrypted,
} from "./e2ee_lib.mjs";

setTag("e2ee-federation");
const BASE_A = envURL("MYELIN_URL_A");
const BASE_B = envURL("MYELIN_URL_B");

const serverOf = (userId) => userId.slice(userId.indexOf(":") + 1);

async function main() {
    const suffix = Date.now().toString(36);
    const [aUser, bUser] = [`alice${suffix}`, `bob${suffix}`];
    const aCreds = await register(BASE_A, aUser);
    const bCreds = await register(BASE_B, bUser);
    if (serverOf(aCreds.user_id) === serverOf(bCreds.user_id)) fail(`A and B are on one server (${aCreds.user_id}, ${bCreds.user_id})`);
    const alice = await startClient("A", BASE_A, aCreds);
    const bob = await startClient("B", BASE_B, bCreds);

    // 1. Encrypted room on A's server; B joins over federation.
    const { room_id: roomId } = await alice.createRoom({
        invite: [bCreds.user_id],
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await waitFor("B to see the invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
    await bob.joinRoom(roomId, { viaServers: [serverOf(aCreds.user_id)] });
    await waitFor("A to see B joined", () => alice.getRoom(roomId)?.getMember(bCreds.user_id)?.membership === "join");
    await waitFor("B's room to be encrypted", () => bob.getCrypto().isEncryptionEnabledInRoom(roomId));
    step(`room ${roomId} is encrypted with A and B joined`);

    // 2. Both directions.
    const sessions = [await sendText(alice, roomId, "hello bob, from A's server")];
    await waitForDecrypted("B", bob, roomId, "hello bob, from A's server");
    sessions.push(await sendText(bob, roomId, "hello alice, from B's server"));
    await waitForDecrypted("A", alice, roomId, "hello alice, from B's server");

    // 3. Cross-signing, then B verifies A across the servers.
    await bootstrapCrossSigning([alice, aUser], [bob, bUser]);
    step("A and B bootstrapped cross-signing");
    await verifyBySas(bob, alice);
    step("B verified A (SAS) and trusts A's cross-signing identity");

    // 4. A's key backup, restored on a fresh device of A.
    const [version, backupKey] = await backUpSessions(alice, roomId, sessions);
    const a2Creds = await login(BASE_A, aUser);
    const alice2 = await startClient("A2", BASE_A, a2Creds);
    await restoreAndReadHistory("A2", alice2, roomId, version, backupKey,
        ["hello bob, from A's server", "hello alice, from B's server"]);

    for (const c of [alice, alice2, bob]) c.stopClient();
    step("PASS");
    process.exit(0);
}

main().catch((err) => fail(err?.stack ?? String(err)));
