// What other packages (testkit, e2e) may reuse from the cli: the launchers.
export * from "./launch/nats-server.js";
export * from "./launch/node-process.js";
export * from "./supervisor/credentials.js";
export { callControlSocket, controlSocketPath } from "./supervisor/control-socket.js";
export { composeFile, prometheusFile, writeComposeCredentials, writeComposeDeployment, defaultComposeTopology, composePlans } from "./compose/compose-topology.js";
export type { ComposeTopology } from "./compose/compose-topology.js";
