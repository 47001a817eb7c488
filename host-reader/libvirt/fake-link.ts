/**
 * A LibvirtLink in memory, for tests of what sits on it (the QMP bridge, the monitor's binding): a
 * domain that runs or not, answers commands with a handler, and emits QMP and lifecycle events when
 * told. Nothing is spawned.
 */
import type { QmpEvent } from '../qmp/events.js';
import type { LibvirtDomainRef } from './domain-ref.js';
import type { LifecycleEvent } from './event-line.js';
import { LibvirtError, type LibvirtLink, type LibvirtWatchHandlers, type QmpCommand, type QmpReplyBody } from './virsh.js';

export interface FakeLibvirtLinkOptions {
  ref?: LibvirtDomainRef;
  running?: boolean;
  /** Answers a command of a running domain; default: query-version and query-status, else CommandNotFound. */
  handle?: (c: QmpCommand) => QmpReplyBody | Promise<QmpReplyBody>;
  xml?: string;
}

export const FAKE_QEMU_VERSION = { qemu: { major: 9, minor: 1, micro: 0 }, package: 'fake' };

export class FakeLibvirtLink implements LibvirtLink {
  readonly ref: LibvirtDomainRef;
  running: boolean;
  xml: string;
  /** Every command sent, in order. */
  readonly commands: QmpCommand[] = [];
  readonly #handle: (c: QmpCommand) => QmpReplyBody | Promise<QmpReplyBody>;
  readonly #watchers = new Set<LibvirtWatchHandlers>();
  /** How many times watch() was called (the bridge restarts it after an exit). */
  watchCalls = 0;

  constructor(o: FakeLibvirtLinkOptions = {}) {
    this.ref = o.ref ?? { domain: 'fake-dom', uri: 'qemu:///system' };
    this.running = o.running ?? true;
    this.xml = o.xml ?? `<domain type="kvm"><name>${this.ref.domain}</name></domain>`;
    this.#handle =
      o.handle ??
      ((c) =>
        c.execute === 'query-version'
          ? { return: FAKE_QEMU_VERSION }
          : c.execute === 'query-status'
            ? { return: { status: 'running', running: true, singlestep: false } }
            : { error: { class: 'CommandNotFound', desc: `The command ${c.execute} has not been found` } });
  }

  async qmp(command: QmpCommand): Promise<QmpReplyBody> {
    this.commands.push(command);
    if (!this.running) throw new LibvirtError(`qemu-monitor-command ${command.execute}`, 'Requested operation is not valid: domain is not running', true);
    return this.#handle(command);
  }

  async dumpXml(): Promise<string> {
    return this.xml;
  }

  watch(h: LibvirtWatchHandlers): { stop(): void } {
    this.watchCalls += 1;
    this.#watchers.add(h);
    return { stop: () => this.#watchers.delete(h) };
  }

  /** Sends a QMP event to every watcher. */
  emit(event: QmpEvent): void {
    for (const h of this.#watchers) h.onEvent(event);
  }

  lifecycle(e: LifecycleEvent): void {
    if (e.kind === 'Stopped') this.running = false;
    if (e.kind === 'Started') this.running = true;
    for (const h of this.#watchers) h.onLifecycle(e);
  }

  /** Ends the watchers' streams, as virsh exiting would. */
  endWatch(detail = 'virsh event ended (exit 1)'): void {
    const hs = [...this.#watchers];
    this.#watchers.clear();
    for (const h of hs) h.onExit('events', detail);
  }

  get watching(): number {
    return this.#watchers.size;
  }
}
