// An abortable wait, so every delay of a host (retry backoff, boot and stop
// time) ends at once when its VM is removed or the host stops, and no timer
// outlives the thing it was for.

/**
 * Waits `ms` unless `signal` aborts first.
 * @returns true when the time passed, false when aborted (never rejects).
 */
export async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  return new Promise((resolve) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
