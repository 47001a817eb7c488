import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  bzImageVersion,
  bzImageVersionOf,
  hostKernel,
  imagePackageFromDepends,
  kernelCacheName,
  KernelFetchError,
  versionFromShow,
} from '../../build/kernels.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs('kernels-test-');

describe('hostKernel', () => {
  it('picks the newest version, not the last in plain string order, with its modules and System.map', async () => {
    const d = tempDir();
    for (const v of ['6.1.0-9-amd64', '6.1.0-10-amd64', '5.10.0-30-amd64']) writeFileSync(join(d, `vmlinuz-${v}`), '');
    writeFileSync(join(d, 'config-6.1.0-99-amd64'), '');
    writeFileSync(join(d, 'System.map-6.1.0-10-amd64'), 'ffffffff81000000 T _text\n'.repeat(400));
    const k = await hostKernel(d, '/mods');
    expect(k).toEqual({
      release: '6.1.0-10-amd64',
      vmlinuz: join(d, 'vmlinuz-6.1.0-10-amd64'),
      modulesDir: '/mods/6.1.0-10-amd64',
      systemMap: join(d, 'System.map-6.1.0-10-amd64'),
      source: `host ${d}`,
    });
  });

  it("leaves out Debian's placeholder System.map (83 bytes: the real one is in the -dbg package)", async () => {
    const d = tempDir();
    writeFileSync(join(d, 'vmlinuz-6.1.0-10-amd64'), '');
    writeFileSync(join(d, 'System.map-6.1.0-10-amd64'), 'ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n');
    expect((await hostKernel(d, '/mods'))?.systemMap).toBeUndefined();
  });

  it('names the Debian package when there is no kernel', async () => {
    await expect(hostKernel(tempDir())).rejects.toThrow(/apt-get install linux-image-amd64/);
  });
});

describe('apt output parsing', () => {
  it('finds the image package a metapackage depends on', () => {
    const text = 'linux-image-amd64\n  Depends: linux-image-6.12.95+deb12-amd64\n';
    expect(imagePackageFromDepends(text, 'linux-image-amd64')).toBe('linux-image-6.12.95+deb12-amd64');
    expect(imagePackageFromDepends('linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n', 'x')).toBe(
      'linux-image-6.1.0-57-cloud-amd64',
    );
    expect(() => imagePackageFromDepends('linux-image-amd64\n  Depends: firmware-foo\n', 'linux-image-amd64')).toThrow(KernelFetchError);
  });

  it('reads the Version field', () => {
    expect(versionFromShow('Package: linux-image-6.12.95+deb12-amd64\nVersion: 6.12.95-1~bpo12+1\nArchitecture: amd64\n', 'p')).toBe(
      '6.12.95-1~bpo12+1',
    );
    expect(() => versionFromShow('Package: x\n', 'x')).toThrow(/no Version/);
  });

  it('makes one safe directory name per package version', () => {
    expect(kernelCacheName('linux-image-6.12.95+deb12-amd64', '6.12.95-1~bpo12+1')).toBe('linux-image-6.12.95+deb12-amd64_6.12.95-1~bpo12+1');
    expect(kernelCacheName('p', '1:2.0/../x')).toBe('p_1_2.0_.._x');
  });
});

describe('bzImageVersionOf', () => {
  const header = (version: string, protocol = 0x20f) => {
    const b = Buffer.alloc(0x1000);
    b.write('HdrS', 0x202, 'latin1');
    b.writeUInt16LE(protocol, 0x206);
    b.writeUInt16LE(0x800 - 0x200, 0x20e);
    b.write(`${version}\0`, 0x800, 'latin1');
    return b;
  };

  it('reads the kernel_version string of the setup header', () => {
    expect(bzImageVersionOf(header('6.12.95+deb12-amd64 (debian-kernel@lists.debian.org) #1'))).toBe(
      '6.12.95+deb12-amd64 (debian-kernel@lists.debian.org) #1',
    );
  });

  it('refuses what is not a bzImage, an old protocol, an offset outside, an unterminated string', () => {
    expect(() => bzImageVersionOf(Buffer.alloc(0x1000))).toThrow(/HdrS/);
    expect(() => bzImageVersionOf(header('x', 0x1ff))).toThrow(/too old/);
    const outside = header('x');
    outside.writeUInt16LE(0xff00, 0x20e);
    expect(() => bzImageVersionOf(outside)).toThrow(/outside/);
    const long = header('y'.repeat(0x700));
    expect(() => bzImageVersionOf(long.subarray(0, 0x900))).toThrow(/NUL-terminated/);
    expect(() => bzImageVersionOf(Buffer.alloc(10))).toThrow(KernelFetchError);
  });

  it('reads the host kernel', async () => {
    const k = await hostKernel();
    const v = await bzImageVersion(k.vmlinuz);
    expect(v.startsWith(`${k.release} `)).toBe(true);
    expect(readFileSync(k.vmlinuz).length).toBeGreaterThan(1_000_000);
  });
});
