// Reading what happened: the stored history, then (when following) what
// happens next, each message decoded into a DatacenterEvent. A message that
// does not decode (a foreign publisher) is skipped and counted, never fatal.

import type { Bus, ReadHistoryOptions } from "@simdc/bus";
import { describeEvent, type DatacenterEvent } from "./event.js";

export interface ReadEventsResult {
  /** Messages on event subjects that did not decode as their subject says. */
  undecodable: number;
}

export async function readEvents(bus: Bus, options: ReadHistoryOptions, onEvent: (event: DatacenterEvent) => void): Promise<ReadEventsResult> {
  let undecodable = 0;
  await bus.eventHistory().read(options, (stored) => {
    let event: DatacenterEvent | null;
    try {
      event = describeEvent(bus.subjects, stored.subject, stored.data, stored.storedAtMs);
    } catch {
      undecodable += 1;
      return;
    }
    if (event) onEvent(event);
  });
  return { undecodable };
}
