// Named points between the steps of the controller's changes where it can be
// made to die on purpose (--crash-at), so an experiment or a test can crash
// it between any two steps of a change and watch the state converge. A point
// that is not armed costs one set lookup.

import { invalidArgument, type Logger } from "@simdc/common";

/** Where a change can be cut short, in the order a change passes them. */
export const crashPointNames = [
  // A VM's or volume's record is stored; nothing else is done yet.
  "record-stored",
  // The first answer to a request with a request id is stored.
  "answer-stored",
  // The lease is confirmed; the answer is about to go out.
  "before-answer",
  // The first chunk of a host's new document is written.
  "document-written",
  // A SAN node made a volume's backing file; the volume is not READY yet.
  "backing-created",
  // A SAN node deleted a volume's backing file; the record is not gone yet.
  "backing-deleted",
] as const;

export type CrashPointName = (typeof crashPointNames)[number];

/**
 * The crash points of `list` ("a,b"; "" for none).
 * @throws SimdcError INVALID_ARGUMENT naming an unknown point and the known ones.
 */
export function parseCrashPoints(list: string): Set<CrashPointName> {
  const out = new Set<CrashPointName>();
  for (const name of list.split(",").map((n) => n.trim()).filter((n) => n)) {
    if (!(crashPointNames as readonly string[]).includes(name)) {
      throw invalidArgument(`--crash-at ${JSON.stringify(name)} is not a crash point: ${crashPointNames.join(", ")}`);
    }
    out.add(name as CrashPointName);
  }
  return out;
}

export class CrashPoints {
  constructor(
    private readonly armed: ReadonlySet<CrashPointName>,
    private readonly logger: Logger,
  ) {}

  /** Dies at once, as with SIGKILL, when `point` is armed. */
  reach(point: CrashPointName): void {
    if (!this.armed.has(point)) return;
    this.logger.fatal({ crashPoint: point }, "crashing on purpose (--crash-at)");
    process.kill(process.pid, "SIGKILL");
  }
}
