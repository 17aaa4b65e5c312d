// Runs async operations one at a time, in arrival order, with a bounded
// number waiting. The block store puts volume creation and deletion through
// one, so capacity checks and file renames never interleave. It does not retry.

import { resourceExhausted } from "@simdc/common";

export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;

  /** @param waitingMax operations allowed to wait behind the running one. */
  constructor(
    private readonly what: string,
    readonly waitingMax: number,
  ) {}

  /**
   * Runs `operation` after every earlier one has settled; its result or error is passed through.
   * @throws SimdcError RESOURCE_EXHAUSTED at once when waitingMax operations already wait.
   */
  run<T>(operation: () => Promise<T>): Promise<T> {
    if (this.waiting >= this.waitingMax) {
      return Promise.reject(resourceExhausted(`too many ${this.what} queued (limit ${this.waitingMax})`));
    }
    this.waiting += 1;
    const result = this.tail.then(() => {
      this.waiting -= 1;
      return operation();
    });
    // The next operation waits for this one whether it succeeds or fails.
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  /** Resolves once every operation queued so far has settled. */
  idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }
}
