// @ts-check
import js from '@eslint/js';
import boundaries from 'eslint-plugin-boundaries';
import tseslint from 'typescript-eslint';

/**
 * The layers, one way (DESIGN's module map): cli -> features (monitor, bake, controller) -> protocols
 * (host-reader, protocol) -> encoders (acpi), with util/ a leaf anyone may use. guest-agent/ runs in
 * the guest and takes only the shared formats in protocol/. build/ (bundling, the test/demo VM, the
 * demo) and the tests and benchmarks may use everything.
 */
const LAYERS = {
  acpi: [],
  protocol: [],
  util: [],
  'guest-agent': ['protocol'],
  'host-reader': ['acpi', 'protocol', 'util'],
  monitor: ['host-reader', 'acpi', 'protocol', 'util', 'docs'],
  bake: ['protocol', 'util'],
  controller: ['protocol', 'util', 'docs'],
  cli: ['controller', 'monitor', 'bake', 'host-reader', 'acpi', 'protocol', 'util', 'guest-agent', 'build'],
  build: ['host-reader', 'acpi', 'protocol', 'util', 'guest-agent'],
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.cache/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    // Type-aware rules: a promise nobody awaits or catches is how a throw became an unhandled
    // rejection that killed the daemon (issue 9).
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: false }],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false, attributes: false } }],
    },
  },
  {
    files: ['**/*.ts'],
    plugins: { boundaries },
    settings: {
      'import/resolver': { typescript: { alwaysTryTypes: true } },
      'boundaries/include': ['**/*.ts'],
      // docs/ holds the published JSON schemas (imported); nothing may import test/ or bench/.
      'boundaries/elements': [...Object.keys(LAYERS), 'docs', 'test', 'bench'].map((type) => ({ type, pattern: type })),
    },
    rules: {
      'boundaries/dependencies': [
        'error',
        {
          default: 'disallow',
          message: '{{from.type}}/ may not import {{to.type}}/ (the layers are in eslint.config.js)',
          policies: [
            // Libraries and Node's own modules: any layer (package.json lists what we depend on).
            { allow: { to: { module: { origin: 'external' } } } },
            { allow: { to: { module: { origin: 'core' } } } },
            ...Object.entries(LAYERS).map(([from, allow]) => ({
              from: { element: { type: from } },
              allow: { to: { element: { types: { anyOf: [from, ...allow] } } } },
            })),
          ],
        },
      ],
    },
  },
  {
    // The dashboard's one script runs in the browser (plain ES5, no build step).
    files: ['controller/web/assets/**/*.js'],
    languageOptions: {
      sourceType: 'script',
      globals: { window: 'readonly', document: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly' },
    },
  },
  {
    // Tests, benchmarks and configs reach everything.
    files: ['test/**', 'bench/**', '*.config.ts'],
    rules: { 'boundaries/dependencies': 'off' },
  },
);
