import { QmpProtocolError } from './errors.js';
import type { QmpEvent } from './events.js';

/**
 * Decoding of QMP messages: pure functions over one line of peer data (docs/interop/qmp-spec.rst).
 * They return a `QmpProtocolError` instead of throwing: the line is hostile until proven otherwise.
 */

export interface QmpVersion {
  readonly major: number;
  readonly minor: number;
  readonly micro: number;
  /** Distribution package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18`. */
  readonly package: string;
}

/** The first line QEMU sends: `{"QMP": {"version": {...}, "capabilities": [...]}}`. */
export interface QmpGreeting {
  readonly version: QmpVersion;
  readonly capabilities: readonly string[];
}


export type ParsedMessage =
  | { kind: 'event'; event: QmpEvent }
  | { kind: 'reply'; id: string; value: unknown; error: undefined }
  | { kind: 'reply'; id: string; value: undefined; error: { errorClass: string; desc: string } };

/** Deepest nesting of arrays and objects accepted in a QMP line: QEMU's replies nest a few levels. */
export const MAX_JSON_DEPTH = 64;

/**
 * Whether `text` nests arrays/objects deeper than `max` (default MAX_JSON_DEPTH): JSON.parse takes any
 * depth, but what walks the value afterwards (JSON.stringify into a report, say) recurses and would
 * overflow the stack. One pass over the characters, strings skipped.
 */
export function jsonNestsDeeper(text: string, max = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}

function tooDeepJson(line: string): QmpProtocolError | undefined {
  return jsonNestsDeeper(line) ? new QmpProtocolError('bad-message', `JSON nested deeper than ${MAX_JSON_DEPTH} levels`, { text: line }) : undefined;
}

/** Classifies one line of the running session (qmp-spec.rst, "Server responses" and "Asynchronous events"). */
export function parseMessage(line: string): ParsedMessage | QmpProtocolError {
  const tooDeep = tooDeepJson(line);
  if (tooDeep !== undefined) return tooDeep;
  let message: unknown;
  try {
    message = JSON.parse(line);
  } catch (error) {
    return new QmpProtocolError('bad-json', 'line is not JSON', { text: line }, { cause: error });
  }
  if (!isObject(message)) {
    return new QmpProtocolError('bad-message', 'message is not a JSON object', { text: line });
  }
  if ('event' in message) {
    const { event, data, timestamp } = message;
    if (typeof event !== 'string') {
      return new QmpProtocolError('bad-message', 'event name is not a string', { text: line });
    }
    if (data !== undefined && !isObject(data)) {
      return new QmpProtocolError('bad-message', 'event data is not an object', { text: line });
    }
    let when: QmpEvent['timestamp'];
    if (isObject(timestamp) && typeof timestamp.seconds === 'number' && typeof timestamp.microseconds === 'number') {
      when = { seconds: timestamp.seconds, microseconds: timestamp.microseconds };
    }
    return { kind: 'event', event: { event, data: data ?? {}, timestamp: when } };
  }
  if ('return' in message || 'error' in message) {
    const { id } = message;
    if (id === undefined) {
      // We always send an id; QEMU omits it only when it could not parse what we sent.
      return new QmpProtocolError('bad-message', 'reply without an id', { text: line });
    }
    // A non-string id is not one of ours: route it nowhere (counted as a late reply).
    const key = typeof id === 'string' ? id : `\u0000${typeof id}`;
    if ('error' in message) {
      const error = message.error;
      if (!isObject(error) || typeof error.class !== 'string' || typeof error.desc !== 'string') {
        return new QmpProtocolError('bad-message', 'error reply lacks class/desc', { text: line });
      }
      return { kind: 'reply', id: key, value: undefined, error: { errorClass: error.class, desc: error.desc } };
    }
    return { kind: 'reply', id: key, value: message.return, error: undefined };
  }
  if ('QMP' in message) {
    return new QmpProtocolError('bad-message', 'unexpected greeting in a running session', { text: line });
  }
  return new QmpProtocolError('bad-message', 'neither a reply nor an event', { text: line });
}

/** Validates the greeting line (qmp-spec.rst, "Server Greeting"). */
export function parseGreeting(line: string): QmpGreeting | QmpProtocolError {
  if (tooDeepJson(line) !== undefined) return new QmpProtocolError('bad-greeting', `greeting nested deeper than ${MAX_JSON_DEPTH} levels`, { text: line });
  let message: unknown;
  try {
    message = JSON.parse(line);
  } catch (error) {
    return new QmpProtocolError('bad-greeting', 'greeting is not JSON', { text: line }, { cause: error });
  }
  const qmp = isObject(message) ? message.QMP : undefined;
  const version = isObject(qmp) ? qmp.version : undefined;
  const qemu = isObject(version) ? version.qemu : undefined;
  const capabilities = isObject(qmp) ? qmp.capabilities : undefined;
  if (
    !isObject(qmp) ||
    !isObject(version) ||
    !isObject(qemu) ||
    !isVersionNumber(qemu.major) ||
    !isVersionNumber(qemu.minor) ||
    !isVersionNumber(qemu.micro) ||
    !Array.isArray(capabilities) ||
    !capabilities.every((c): c is string => typeof c === 'string')
  ) {
    return new QmpProtocolError('bad-greeting', 'expected {"QMP": {"version": {"qemu": ...}, "capabilities": [...]}}', {
      text: line,
    });
  }
  return {
    version: {
      major: qemu.major,
      minor: qemu.minor,
      micro: qemu.micro,
      package: typeof version.package === 'string' ? version.package : '',
    },
    capabilities: [...capabilities],
  };
}

function isVersionNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

