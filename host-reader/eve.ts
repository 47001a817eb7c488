/**
 * How an EVE node lays out one app VM (lf-edge/eve pkg/pillar/hypervisor/kvm.go; DESIGN, "EVE facts"):
 * `/run/hypervisor/kvm/<dom>/` holds `qmp` (EVE connects per command), `listener.qmp` (EVE holds it
 * for events), `cons` (the console chardev socket, `mux=on`) and `pid` (QEMU's `-pidfile`). The
 * console log is ours: EVE writes the console to `/dev/fd/1`, so `eve-diag qemu-args --eve-dom` puts
 * a `logfile=` at `cons.log` beside the socket. Every EVE path in eve-diag comes from here.
 */
import { join } from 'node:path';

/** Where EVE keeps its VMs' sockets. */
export const EVE_KVM_DIR = '/run/hypervisor/kvm';

/** An EVE domain name is a UUID plus version and instance numbers (`<uuid>.1.1`): one path segment. */
export const EVE_DOM_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export interface EveDomPaths {
  dir: string;
  qmp: string;
  listenerQmp: string;
  console: string;
  consoleLog: string;
  pidfile: string;
}

/** The paths of domain `dom` under `root` (default EVE_KVM_DIR). */
export function eveDomPaths(dom: string, root: string = EVE_KVM_DIR): EveDomPaths {
  const dir = join(root, dom);
  return {
    dir,
    qmp: join(dir, 'qmp'),
    listenerQmp: join(dir, 'listener.qmp'),
    console: join(dir, 'cons'),
    consoleLog: join(dir, 'cons.log'),
    pidfile: join(dir, 'pid'),
  };
}
