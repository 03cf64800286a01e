import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'scratch/**', 'bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/only-throw-error': 'error',
    },
  },
  { files: ['**/*.js', '**/*.mjs'], ...tseslint.configs.disableTypeChecked },
  // The agent: `performance` loads modules it would compile from source (see src/agent/clock.ts).
  {
    files: ['src/agent/**/*.ts'],
    ignores: ['src/agent/**/*.test.ts'],
    rules: { 'no-restricted-globals': ['error', { name: 'performance', message: 'Use monotonicMs() from src/agent/clock.ts.' }] },
  },
  // The dashboard's page script runs in the browser.
  { files: ['src/dashboard/public/**/*.js'], languageOptions: { globals: globals.browser } },
);
