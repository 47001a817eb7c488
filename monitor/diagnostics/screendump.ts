import { constants } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { realClock, type Clock } from '../../util/clock.js';
import type { AppTarget, Collector, CollectorResult } from '../types.js';
import { connectQmp, Deadline, describeError, failed, formatBytes, withQmp, type QmpConnector } from './common.js';

/**
 * What the VM's screen shows (a graphical console's panic, a login prompt, a firmware menu): QMP
 * `screendump` with `format: 'png'` (QEMU 7.1 and later; 7.2 tested) into a private temporary file, read
 * back bounded, checked (PNG signature, an IHDR chunk with a sane size) and attached as `screen.png`.
 * A VM with no display device (`-nodefaults`, `-vga none`) has no console to dump: QEMU says so and the
 * step is `ok: false` with QEMU's message. Harmless to the guest (QEMU reads its framebuffer).
 */

export const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Width and height above this are not a screen (QEMU's displays stay far below). */
export const MAX_SCREEN_PIXELS_PER_SIDE = 16384;

export interface ScreendumpOptions {
  /** The display device's QOM id (`device` of screendump); default QEMU's first console. */
  device?: string;
  /** The head of a multi-head device. */
  head?: number;
  /** Where the temporary file goes (QEMU writes it, so it must be able to). Default the system's temp dir. */
  dir?: string;
  /** Artifact name. Default `screen.png`. */
  name?: string;
  qmpConnector?: QmpConnector;
  clock?: Clock;
}

/** Width and height of a PNG, or why `data` is not one. */
export function pngSize(data: Uint8Array): { width: number; height: number } | { problem: string } {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (b.length < 33) return { problem: `${b.length} bytes, too short for a PNG` };
  if (!b.subarray(0, 8).equals(PNG_SIGNATURE)) return { problem: 'no PNG signature' };
  if (b.readUInt32BE(8) !== 13 || b.toString('latin1', 12, 16) !== 'IHDR') return { problem: 'the first chunk is not IHDR' };
  const width = b.readUInt32BE(16);
  const height = b.readUInt32BE(20);
  if (width < 1 || height < 1 || width > MAX_SCREEN_PIXELS_PER_SIDE || height > MAX_SCREEN_PIXELS_PER_SIDE) {
    return { problem: `an implausible size ${width}x${height}` };
  }
  return { width, height };
}

export class ScreendumpCollector implements Collector {
  readonly kind = 'screendump';
  readonly #o: ScreendumpOptions;
  readonly #dir: string;
  readonly #connect: QmpConnector;
  readonly #clock: Clock;

  constructor(options: ScreendumpOptions = {}) {
    this.#o = options;
    this.#dir = options.dir ?? tmpdir();
    if (!isAbsolute(this.#dir)) throw new RangeError(`ScreendumpCollector: dir must be an absolute path, got ${JSON.stringify(options.dir)}`);
    if (options.head !== undefined && (!Number.isSafeInteger(options.head) || options.head < 0)) {
      throw new RangeError(`ScreendumpCollector: head must be an integer >= 0, got ${String(options.head)}`);
    }
    if (options.device !== undefined && !/^[A-Za-z][A-Za-z0-9_.-]*$/.test(options.device)) {
      throw new RangeError(`ScreendumpCollector: device must be a QOM id, got ${JSON.stringify(options.device)}`);
    }
    this.#connect = options.qmpConnector ?? connectQmp;
    this.#clock = options.clock ?? realClock;
  }

  async collect(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult> {
    if (target.qmp === undefined) return failed('screendump: the app has no QMP socket');
    if (opts.signal.aborted) return failed('screendump: aborted before it started');
    const deadline = new Deadline(opts.timeoutMs, this.#clock);
    const name = this.#o.name ?? 'screen.png';
    let tmp: string | undefined;
    try {
      tmp = await mkdtemp(join(this.#dir, '.tmp-screendump-')); // 0700: only we and QEMU (as root) write there
      const file = join(tmp, 'screen.png');
      const args: Record<string, unknown> = { filename: file, format: 'png' };
      if (this.#o.device !== undefined) args['device'] = this.#o.device;
      if (this.#o.head !== undefined) args['head'] = this.#o.head;
      await withQmp(this.#connect, target.qmp, { timeoutMs: deadline.cap(5000), signal: opts.signal }, (qmp) =>
        qmp.execute('screendump', args, { timeoutMs: deadline.cap(10_000), signal: opts.signal }),
      );
      const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
      let data: Buffer;
      try {
        const st = await handle.stat();
        if (!st.isFile()) return failed('screendump: QEMU wrote no regular file');
        if (st.size > opts.maxBytes) return failed(`screendump: the PNG has ${formatBytes(st.size)}, more than the step's ${formatBytes(opts.maxBytes)} cap`);
        data = Buffer.alloc(st.size);
        let got = 0;
        while (got < data.length) {
          const { bytesRead } = await handle.read(data, got, data.length - got, got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        data = data.subarray(0, got);
      } finally {
        await handle.close();
      }
      const size = pngSize(data);
      if ('problem' in size) return failed(`screendump: QEMU's file is not a usable PNG: ${size.problem}`);
      return {
        ok: true,
        summary: `screendump: ${size.width}x${size.height} PNG, ${formatBytes(data.length)}`,
        artifacts: [{ name, mediaType: 'image/png', data }],
      };
    } catch (error) {
      return failed(`screendump: ${describeError(error)}`);
    } finally {
      if (tmp !== undefined) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    }
  }
}
