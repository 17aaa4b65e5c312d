// Protobuf encoding and decoding for every message that crosses the bus. A
// buffer that protobufjs cannot parse becomes INVALID_ARGUMENT here, so no
// handler ever sees a decode exception.

import { invalidArgument } from "@simdc/common";
import type { Reader, Writer } from "protobufjs";

/** The static shape protobufjs generates for each message class. */
export interface MessageType<T> {
  encode(message: T): Writer;
  decode(reader: Reader | Uint8Array): T;
  create(properties?: Partial<T>): T;
  getTypeUrl(prefix?: string): string;
}

export function encodeMessage<T>(type: MessageType<T>, message: T): Uint8Array {
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
