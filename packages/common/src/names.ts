// Names of hosts, VMs, volumes and nodes become NATS subject tokens and file
// names, so they are validated once, here, at the edge. The rule is the one
// Kubernetes uses for DNS labels: short, lower case, digits and inner dashes.

import { invalidArgument } from "./errors.js";

export const nameLengthMax = 63;
const namePattern = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** True when `name` is safe as a subject token, a KV key part and a file name. */
export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= nameLengthMax && namePattern.test(name);
}

/**
 * Returns `name` when valid.
 * @throws SimdcError INVALID_ARGUMENT naming the field and the rule.
 */
export function checkName(field: string, name: string): string {
  if (!isValidName(name)) {
    throw invalidArgument(
      `${field} ${JSON.stringify(name)} is not a valid name: 1-${nameLengthMax} characters of a-z, 0-9 and '-', starting and ending with a letter or digit`,
    );
  }
  return name;
}

/**
 * Returns `value` when it is an integer within [min, max].
 * @throws SimdcError INVALID_ARGUMENT naming the field and the range.
 */
export function checkRange(field: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(`${field} must be an integer from ${min} to ${max}, got ${value}`);
  }
  return value;
}
