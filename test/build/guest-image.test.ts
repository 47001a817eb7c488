import { execFileSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { encodeCpio } from '../../build/cpio.js';
import {
  buildGuestImage,
  GUEST_READY_LINE,
  guestCpioEntries,
  guestImageKey,
  hasElfInterpreter,
  initScript,
} from '../../build/guest-image.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs('guest-image-test-');

describe('initScript', () => {
  const init = initScript();

  it('is valid POSIX sh (busybox sh -n)', () => {
    expect(() => execFileSync('/bin/busybox', ['sh', '-n', '-c', init])).not.toThrow();
  });

  it('mounts proc, sysfs and devtmpfs, enables every SysRq function, then says ready', () => {
    const lines = init.split('\n');
    const at = (line: string) => lines.indexOf(line);
    expect(at('mount -t proc proc /proc')).toBeGreaterThan(0);
    expect(at('mount -t sysfs sysfs /sys')).toBeGreaterThan(0);
    expect(at('mount -t devtmpfs devtmpfs /dev')).toBeGreaterThan(0);
    expect(at('echo 1 > /proc/sys/kernel/sysrq')).toBeGreaterThan(at('mount -t proc proc /proc'));
    expect(at(`echo ${GUEST_READY_LINE}`)).toBeGreaterThan(at('echo 1 > /proc/sys/kernel/sysrq'));
  });

  it('runs the scenarios named on the kernel command line in the background', () => {
    expect(init).toContain('eve_diag.scenario=*) scenario=${arg#*=}');
    expect(init).toContain('eve_diag.delay=*) delay=${arg#*=}');
    expect(init).toContain('eve_diag.zone_path=*) zone_path=${arg#*=}');
    expect(init).toContain('eve_diag.period=*) period=${arg#*=}');
    expect(init).toContain('scenario= delay=0 zone_path= period=1');
    expect(init).toContain('panic) (sleep "$delay"; echo c > /proc/sysrq-trigger) & ;;');
    expect(init).toContain('stop-userspace) (sleep "$delay"; kill -STOP -1) & ;;');
    expect(init).toContain('(while :; do cat "$zone_path" > /dev/null 2>&1; sleep "$period"; done) & ;;');
  });

  it('serves an unechoed shell on ttyS0 forever', () => {
    expect(init).toMatch(
      /while :; do\n {2}setsid -c sh -c 'stty -echo; PS1= PS2= exec sh -i' <> \/dev\/ttyS0 >&0 2>&0\n {2}sleep 1\ndone\n$/,
    );
  });

  it('parses the command line as the guest will', () => {
    // Run the parsing part of /init against a fake /proc/cmdline.
    const d = tempDir();
    writeFileSync(join(d, 'cmdline'), 'console=ttyS0 eve_diag.scenario=read-agent-zone eve_diag.zone_path=/sys/x/temp eve_diag.period=3 *\n');
    const start = init.indexOf('scenario= delay=0');
    const parse = init.slice(start, init.indexOf('set +f', start)).replace('/proc/cmdline', join(d, 'cmdline'));
    const out = execFileSync('/bin/busybox', ['sh', '-c', `${parse}\necho "$scenario|$delay|$zone_path|$period"`]);
    expect(out.toString()).toBe('read-agent-zone|0|/sys/x/temp|3\n');
  });
});

describe('guestImageKey', () => {
  const key = (busybox: string, init: string) => guestImageKey(encodeCpio(guestCpioEntries(Buffer.from(busybox), init)));

  it('is stable for the same inputs and changes with busybox or /init', () => {
    expect(key('bb', 'init')).toMatch(/^[0-9a-f]{64}$/);
    expect(key('bb', 'init')).toBe(key('bb', 'init'));
    expect(key('bb2', 'init')).not.toBe(key('bb', 'init'));
    expect(key('bb', 'init2')).not.toBe(key('bb', 'init'));
  });
});

describe('hasElfInterpreter', () => {
  it('tells the static busybox from a dynamic binary', () => {
    expect(hasElfInterpreter(readFileSync('/bin/busybox'))).toBe(false);
    expect(hasElfInterpreter(readFileSync('/usr/bin/env'))).toBe(true);
  });

  it('rejects what is not an ELF file, or is truncated', () => {
    expect(() => hasElfInterpreter(Buffer.from('#!/bin/sh\n'.repeat(10)))).toThrow(/not an ELF/);
    expect(() => hasElfInterpreter(readFileSync('/bin/busybox').subarray(0, 100))).toThrow(/out of bounds/);
  });
});

describe('buildGuestImage', () => {
  it('refuses a dynamically linked busybox, naming busybox-static', async () => {
    const cacheDir = tempDir();
    await expect(buildGuestImage({ busyboxPath: '/usr/bin/env', cacheDir })).rejects.toThrow(
      /dynamically linked.*apt-get install busybox-static/,
    );
    await expect(buildGuestImage({ busyboxPath: join(cacheDir, 'none'), cacheDir })).rejects.toThrow(
      /apt-get install busybox-static/,
    );
  });

  it('writes a gzipped initramfs under its key and reuses it', async () => {
    const bootDir = tempDir();
    writeFileSync(join(bootDir, 'vmlinuz-6.1.0-1-amd64'), '');
    const cacheDir = tempDir();
    const first = await buildGuestImage({ bootDir, cacheDir });
    expect(first.kernel).toBe(join(bootDir, 'vmlinuz-6.1.0-1-amd64'));
    expect(first.release).toBe('6.1.0-1-amd64');
    expect(first.initrd).toBe(join(cacheDir, first.key, 'initrd.img'));
    const mtime = statSync(first.initrd).mtimeMs;
    const second = await buildGuestImage({ bootDir, cacheDir });
    expect(second).toEqual(first);
    expect(statSync(second.initrd).mtimeMs).toBe(mtime);

    const cpio = gunzipSync(readFileSync(first.initrd));
    expect(guestImageKey(cpio)).toBe(first.key);
    const names = execFileSync('cpio', ['-t', '--quiet'], { input: cpio }).toString().trim().split('\n');
    expect(names).toEqual(expect.arrayContaining(['init', 'bin/busybox', 'bin/sh', 'bin/setsid', 'dev/console']));
  });
});
