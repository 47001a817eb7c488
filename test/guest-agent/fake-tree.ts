import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fake root with /sys/class/thermal and /proc files, in a temp dir. */
export class FakeRoot {
  readonly root: string;

  constructor(prefix = 'eve-diag-agent-root-') {
    this.root = mkdtempSync(join(tmpdir(), prefix));
  }

  zoneDir(n: number): string {
    return join(this.root, 'sys/class/thermal', `thermal_zone${n}`);
  }

  /** Adds thermal_zoneN with device/path = acpiPath and a temp file. */
  addZone(n: number, acpiPath: string, temp = '25000\n'): string {
    const dir = this.zoneDir(n);
    mkdirSync(join(dir, 'device'), { recursive: true });
    writeFileSync(join(dir, 'device', 'path'), `${acpiPath}\n`);
    writeFileSync(join(dir, 'temp'), temp);
    return join(dir, 'temp');
  }

  /** Creates the thermal class directory with no zones. */
  emptyThermalClass(): void {
    mkdirSync(join(this.root, 'sys/class/thermal'), { recursive: true });
  }

  removeZone(n: number): void {
    rmSync(this.zoneDir(n), { recursive: true, force: true });
  }

  /** Makes `temp` unreadable even for root: a directory where a file should be (EISDIR). */
  breakTemp(n: number): void {
    const temp = join(this.zoneDir(n), 'temp');
    rmSync(temp, { force: true });
    mkdirSync(temp);
  }

  proc(files: { uptime?: string; loadavg?: string; meminfo?: string }): void {
    mkdirSync(join(this.root, 'proc'), { recursive: true });
    for (const [name, text] of Object.entries(files)) if (text !== undefined) writeFileSync(join(this.root, 'proc', name), text);
  }

  cleanup(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

export const PROC_SAMPLE = {
  uptime: '734.21 1402.33\n',
  loadavg: '0.08 0.03 0.01 1/97 1234\n',
  meminfo: 'MemTotal:        1004112 kB\nMemFree:          512000 kB\nMemAvailable:     401236 kB\nBuffers:           12000 kB\n',
};
