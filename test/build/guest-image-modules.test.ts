import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { buildGuestImage, initScript, kernelModuleFiles } from '../../build/guest-image.js';
import { tempDirs } from '../helpers/temp-dirs.js';

/** build/guest-image.ts option `modules` (the heartbeat disk's guest test needs virtio_blk): a fake modules tree. */

const tempDir = tempDirs('eve-diag-modules-');

const V = '6.1.0-1-amd64';

/** A modules directory: virtio_blk -> virtio -> virtio_ring, virtio_pci (gzipped) -> virtio; one built-in. */
function modulesDir(): string {
  const dir = tempDir();
  mkdirSync(join(dir, 'kernel/drivers/virtio'), { recursive: true });
  mkdirSync(join(dir, 'kernel/drivers/block'), { recursive: true });
  writeFileSync(join(dir, 'kernel/drivers/virtio/virtio_ring.ko'), 'ring');
  writeFileSync(join(dir, 'kernel/drivers/virtio/virtio.ko'), 'virtio');
  writeFileSync(join(dir, 'kernel/drivers/block/virtio_blk.ko'), 'blk');
  writeFileSync(join(dir, 'kernel/drivers/virtio/virtio_pci.ko.gz'), gzipSync('pci'));
  writeFileSync(
    join(dir, 'modules.dep'),
    [
      'kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko',
      'kernel/drivers/virtio/virtio_ring.ko:',
      // modules.dep lists the deepest dependency last; the order is worked out, not trusted.
      'kernel/drivers/virtio/virtio_pci.ko.gz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
      'kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
      '',
    ].join('\n'),
  );
  writeFileSync(join(dir, 'modules.builtin'), 'kernel/drivers/ata/ata_piix.ko\n');
  return dir;
}

describe('kernel modules in the test guest image', () => {
  it('resolves dependencies in load order, unpacks .ko.gz, skips built-ins, refuses unknown names', async () => {
    const dir = modulesDir();
    const files = await kernelModuleFiles(dir, V, ['virtio-blk', 'virtio_pci', 'ata_piix']);
    expect(files.map((f) => `${f.path}=${f.data.toString()}`)).toEqual([
      `lib/modules/${V}/kernel/drivers/virtio/virtio_ring.ko=ring`,
      `lib/modules/${V}/kernel/drivers/virtio/virtio.ko=virtio`,
      `lib/modules/${V}/kernel/drivers/block/virtio_blk.ko=blk`,
      `lib/modules/${V}/kernel/drivers/virtio/virtio_pci.ko=pci`,
    ]);
    await expect(kernelModuleFiles(dir, V, ['nope'])).rejects.toThrow(`kernel module nope: not in ${dir}/modules.dep nor built in`);
    await expect(kernelModuleFiles(join(dir, 'missing'), V, ['virtio'])).rejects.toThrow(/modules\.dep.*apt-get install linux-image-6\.1\.0-1-amd64/);
  });

  it('/init insmods them before the ready line; without modules /init and the image are the default ones', async () => {
    expect(initScript([])).toBe(initScript());
    const init = initScript(['/lib/modules/x/a.ko', '/lib/modules/x/b.ko']);
    expect(init).toContain('for m in /lib/modules/x/a.ko /lib/modules/x/b.ko; do\n  insmod "$m" || echo "eve-diag: insmod $m failed"\ndone\n');
    expect(init.indexOf('insmod')).toBeLessThan(init.indexOf('echo EVE-DIAG-GUEST-READY'));
    expect(init.replace(/# Kernel modules[^]*?done\n/, '')).toBe(initScript());
    execFileSync('sh', ['-n'], { input: init });

    const bootDir = tempDir();
    writeFileSync(join(bootDir, `vmlinuz-${V}`), '');
    const cacheDir = tempDir();
    const plain = await buildGuestImage({ bootDir, cacheDir });
    expect((await buildGuestImage({ bootDir, cacheDir, modules: [] })).key).toBe(plain.key);
    const withModules = await buildGuestImage({ bootDir, cacheDir, modules: ['virtio_blk'], modulesDir: modulesDir() });
    expect(withModules.key).not.toBe(plain.key);
    const cpio = gunzipSync(readFileSync(withModules.initrd));
    const names = execFileSync('cpio', ['-t', '--quiet'], { input: cpio }).toString().trim().split('\n');
    expect(names).toEqual(expect.arrayContaining([`lib/modules/${V}/kernel/drivers/block/virtio_blk.ko`, `lib/modules/${V}/kernel/drivers/virtio/virtio.ko`]));
    expect(names).not.toContain(`lib/modules/${V}/kernel/drivers/virtio/virtio_pci.ko`);
  });
});
