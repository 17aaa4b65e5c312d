// The baseline peer for bench/run.mjs: a bare NATS responder in its own
// process that answers every request with a fixed payload, so GetVm's round
// trip can be compared with NATS's own on the same machine and layout.
// Usage: node bench/bare-responder.mjs <url> <subject> <reply bytes> [user password]
import { connect } from "nats";

const [url, subject, replyBytes, user, pass] = process.argv.slice(2);
const nc = await connect({ servers: url, ...(user ? { user, pass } : {}) });
const reply = new Uint8Array(Number(replyBytes)).fill(7);
nc.subscribe(subject, { callback: (_err, msg) => msg.respond(reply) });
await nc.flush();
process.stdout.write("ready\n");
process.on("SIGTERM", () => nc.close().then(() => process.exit(0)));
