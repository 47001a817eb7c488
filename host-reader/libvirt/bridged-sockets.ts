/**
 * The QMP sockets this process serves as bridges to a libvirt domain (qmp-bridge.ts). Such a socket
 * is ours, not QEMU's: qemu-pid.ts trusts libvirt's pidfile for it without asking who holds the
 * socket, and never takes its holder (this process) for QEMU.
 */
const bridged = new Set<string>();

export function addBridgedSocket(path: string): void {
  bridged.add(path);
}

export function removeBridgedSocket(path: string): void {
  bridged.delete(path);
}

export function isBridgedSocket(path: string): boolean {
  return bridged.has(path);
}
