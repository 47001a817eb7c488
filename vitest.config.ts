import { defineConfig } from 'vitest/config';

// Two projects: fast pure tests, and real-guest tests that boot Linux in QEMU (TCG).
// The guest tests run files one at a time (2 cores here: each QEMU TCG guest takes a core).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.guest.test.ts'],
        },
      },
      {
        test: {
          name: 'guest',
          include: ['test/**/*.guest.test.ts'],
          fileParallelism: false,
          testTimeout: 240_000,
          hookTimeout: 240_000,
        },
      },
    ],
  },
});
