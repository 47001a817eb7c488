import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from '../../util/repo-root.js';
import { findOnPath } from '../../util/which.js';

/**
 * A static `kexec-file KERNEL INITRD CMDLINE` for the test guest: kexec_file_load(2) then
 * reboot(LINUX_REBOOT_CMD_KEXEC), what kexec-tools' `kexec -s -l ... && kexec -e` does, in one small
 * static binary (busybox has no kexec applet, and Debian's kexec-tools pulls in the Xen libraries).
 * Built with the host's gcc and static libc (g++ and libc6-dev are on every machine that builds the
 * native addons), cached by source hash.
 */
const SOURCE = `#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/reboot.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: kexec-file KERNEL INITRD CMDLINE\\n"); return 2; }
  int k = open(argv[1], O_RDONLY | O_CLOEXEC), i = open(argv[2], O_RDONLY | O_CLOEXEC);
  if (k < 0 || i < 0) { perror("open"); return 1; }
  if (syscall(SYS_kexec_file_load, k, i, strlen(argv[3]) + 1, argv[3], 0UL) != 0) { perror("kexec_file_load"); return 1; }
  sync();
  syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC, NULL);
  perror("reboot(KEXEC)");
  return 1;
}
`;

export async function kexecTool(cacheDir = join(repoRoot(), '.cache', 'kexec')): Promise<Buffer> {
  const hash = createHash('sha256').update(SOURCE).digest('hex').slice(0, 16);
  const bin = join(cacheDir, `kexec-file-${hash}`);
  if (!existsSync(bin)) {
    const gcc = findOnPath('gcc');
    if (gcc === undefined) throw new Error('gcc is not installed: apt-get install gcc libc6-dev (the test guest\'s kexec tool is built with it)');
    await mkdir(cacheDir, { recursive: true });
    const src = join(cacheDir, `kexec-file-${hash}.c`);
    await writeFile(src, SOURCE);
    const tmp = `${bin}.${process.pid}.tmp`;
    await new Promise<void>((resolve, reject) =>
      execFile(gcc, ['-static', '-Os', '-o', tmp, src], (err, _out, stderr) =>
        err ? reject(new Error(`gcc -static failed (apt-get install libc6-dev?): ${stderr || err.message}`, { cause: err })) : resolve(),
      ),
    );
    await rename(tmp, bin);
  }
  return readFile(bin);
}
