// Protobuf encoding and decoding for every message that crosses the bus. A
// buffer that protobufjs cannot parse becomes INVALID_ARGUMENT here, so no
// handler ever sees a decode exception.

import { invalidArgument } from "@simdc/common";
import type { Reader, Writer } from "protobufjs";

/**
 * What may be encoded as a message of class T: any subset of its fields
 * (protobufjs fills in defaults). Nested messages are already typed as their
 * property interfaces by the generated code.
 */
export type Input<T> = { [K in keyof T]?: T[K] | null };

/** The static shape protobufjs generates for each message class. */
export interface MessageType<T> {
  encode(message: Input<T>): Writer;
  decode(reader: Reader | Uint8Array): T;
  create(properties?: Partial<T>): T;
  getTypeUrl(prefix?: string): string;
}

export function encodeMessage<T>(type: MessageType<T>, message: Input<T>): Uint8Array {
  return type.encode(message).finish();
}

/**
 * Decodes a message, turning parse failures into a typed error.
 * @throws SimdcError INVALID_ARGUMENT naming the expected message type.
 */
export function decodeMessage<T>(type: MessageType<T>, data: Uint8Array): T {
  try {
    return type.decode(data);
  } catch (err) {
    throw invalidArgument(`malformed ${typeName(type)}: ${(err as Error).message}`);
  }
}

/** "simdc.v1.CreateVmRequest". */
export function typeName(type: MessageType<unknown>): string {
  return type.getTypeUrl("").replace(/^\//, "");
}
