// The one error space of simdc as seen by TypeScript code. The names match the
// proto ErrorCode enum (without its ERROR_CODE_ prefix) and the numbers are the
// HTTP-style codes that travel in Nats-Service-Error-Code; only the bus
// converts between these and the wire.

/** Error code names, the same as proto `ErrorCode` without the prefix. */
export const errorCodes = {
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  CONFLICT: 409,
  FAILED_PRECONDITION: 412,
  RESOURCE_EXHAUSTED: 429,
  UNAVAILABLE: 503,
  INTERNAL: 500,
  DEADLINE_EXCEEDED: 504,
  PERMISSION_DENIED: 403,
} as const;

export type ErrorCodeName = keyof typeof errorCodes;

export function isErrorCodeName(name: string): name is ErrorCodeName {
  return Object.hasOwn(errorCodes, name);
}

/**
 * An operating error with a code from the shared error space. Thrown by
 * handlers to make a typed error reply, and by clients when a reply is one.
 */
export class SimdcError extends Error {
  readonly code: ErrorCodeName;

  constructor(code: ErrorCodeName, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SimdcError";
    this.code = code;
  }

  /** The HTTP-style number for Nats-Service-Error-Code. */
  get httpStatus(): number {
    return errorCodes[this.code];
  }

  /** "<CODE>: <message>", the Nats-Service-Error header and the CLI's one line. */
  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

export const invalidArgument = (message: string): SimdcError => new SimdcError("INVALID_ARGUMENT", message);
export const notFound = (message: string): SimdcError => new SimdcError("NOT_FOUND", message);
export const alreadyExists = (message: string): SimdcError => new SimdcError("ALREADY_EXISTS", message);
export const failedPrecondition = (message: string): SimdcError => new SimdcError("FAILED_PRECONDITION", message);
export const resourceExhausted = (message: string): SimdcError => new SimdcError("RESOURCE_EXHAUSTED", message);
export const unavailable = (message: string, cause?: unknown): SimdcError =>
  new SimdcError("UNAVAILABLE", message, { cause });
export const deadlineExceeded = (message: string): SimdcError => new SimdcError("DEADLINE_EXCEEDED", message);
export const conflict = (message: string): SimdcError => new SimdcError("CONFLICT", message);

/** Wraps anything thrown into a SimdcError, keeping typed ones as they are. */
export function toSimdcError(err: unknown): SimdcError {
  if (err instanceof SimdcError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new SimdcError("INTERNAL", message, { cause: err });
}
