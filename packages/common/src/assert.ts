// Programmer-error checks. A failed assert is a bug, so it throws a plain
// Error that nothing catches on purpose; operating errors use SimdcError.

/** Throws when `condition` is false; narrows the type when it is true. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
