import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { encodeCpio } from '../../build/cpio.js';
import { buildGuestImage, GUEST_AGENT_PATH, GUEST_SH_AGENT_PATH, guestCpioEntries, guestImageKey, parseLddOutput } from '../../build/guest-image.js';
import { tempDirs } from '../helpers/temp-dirs.js';

/** The options build/guest-image.ts gained for the guest agent (the default image is tested in test/build). */

const tempDir = tempDirs('eve-diag-agent-image-');

describe('parseLddOutput', () => {
  it('takes the libraries and the loader, skips the vDSO', () => {
    const text = [
      '\tlinux-vdso.so.1 (0x00007ffd0a1f2000)',
      '\tlibdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f1b2baaa000)',
      '\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f1b2b800000)',
      '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1b2b53e000)',
      '\t/lib64/ld-linux-x86-64.so.2 (0x00007f1b2bac3000)',
      '',
    ].join('\n');
    expect(parseLddOutput(text)).toEqual([
      '/lib/x86_64-linux-gnu/libdl.so.2',
      '/lib/x86_64-linux-gnu/libstdc++.so.6',
      '/lib/x86_64-linux-gnu/libc.so.6',
      '/lib64/ld-linux-x86-64.so.2',
    ]);
  });

  it('a missing library is an error (the binary would not start)', () => {
    expect(() => parseLddOutput('\tlibfoo.so.1 => not found\n')).toThrow(/libfoo/);
  });
});

describe('guestCpioEntries with extra files', () => {
  it('no extras: the default archive, byte for byte', () => {
    const bb = Buffer.from('bb');
    expect(encodeCpio(guestCpioEntries(bb, 'init', []))).toEqual(encodeCpio(guestCpioEntries(bb, 'init')));
  });

  it('creates each parent directory once, before its files, after the base image', () => {
    const entries = guestCpioEntries(Buffer.from('bb'), 'init', [
      { path: 'usr/lib/eve-diag/a.js', data: Buffer.from('a'), mode: 0o755 },
      { path: '/usr/lib/eve-diag/b.sh', data: Buffer.from('b') },
      { path: 'tmp/x', data: Buffer.from('x') },
    ]);
    const at = entries.findIndex((e) => e.name === 'init');
    expect(entries.slice(at + 1).map((e) => `${e.kind} ${e.name}`)).toEqual([
      'dir usr',
      'dir usr/lib',
      'dir usr/lib/eve-diag',
      'file usr/lib/eve-diag/a.js',
      'file usr/lib/eve-diag/b.sh',
      'file tmp/x',
    ]);
  });

  it('refuses to replace what the base image has, or a file twice', () => {
    const bb = Buffer.from('bb');
    for (const path of ['init', 'bin/sh', 'bin/busybox', 'dev/console', 'tmp']) {
      expect(() => guestCpioEntries(bb, 'i', [{ path, data: bb }])).toThrow(/already in the image|applet/);
    }
    expect(() => guestCpioEntries(bb, 'i', [{ path: 'a', data: bb }, { path: 'a', data: bb }])).toThrow(/already/);
  });

  it('the cache key changes with the extras', () => {
    const key = (extra: { path: string; data: Buffer }[]) => guestImageKey(encodeCpio(guestCpioEntries(Buffer.from('bb'), 'i', extra)));
    expect(key([{ path: 'a', data: Buffer.from('1') }])).not.toBe(key([]));
    expect(key([{ path: 'a', data: Buffer.from('1') }])).not.toBe(key([{ path: 'a', data: Buffer.from('2') }]));
  });
});

describe('buildGuestImage options', () => {
  it('agent and node: the files at their paths (a small dynamic binary stands in for node)', async () => {
    const bootDir = tempDir();
    writeFileSync(join(bootDir, 'vmlinuz-6.1.0-1-amd64'), '');
    const cacheDir = tempDir();
    const plain = await buildGuestImage({ bootDir, cacheDir });
    const img = await buildGuestImage({
      bootDir,
      cacheDir,
      node: { binary: '/usr/bin/env' },
      agent: { bundle: 'console.log(1)\n', sh: '#!/bin/sh\n' },
      files: [{ path: 'etc/passwd', data: Buffer.from('root:x:0:0:root:/root:/bin/sh\n') }],
    });
    expect(img.key).not.toBe(plain.key);
    expect(img.initrd).toBe(join(cacheDir, img.key, 'initrd.img'));
    const cpio = gunzipSync(readFileSync(img.initrd));
    const listing = execFileSync('cpio', ['-t', '-v', '--quiet'], { input: cpio }).toString();
    const names = execFileSync('cpio', ['-t', '--quiet'], { input: cpio }).toString().trim().split('\n');
    const libs = parseLddOutput(execFileSync('ldd', ['/usr/bin/env']).toString());
    expect(names).toEqual(expect.arrayContaining(['usr/bin/env', ...libs.map((l) => l.slice(1)), GUEST_AGENT_PATH.slice(1), GUEST_SH_AGENT_PATH.slice(1), 'etc/passwd', 'init']));
    expect(listing).toMatch(new RegExp(`-rwxr-xr-x .* ${GUEST_SH_AGENT_PATH.slice(1)}\\n`));
  });
});
