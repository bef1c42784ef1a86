import { defineConfig } from 'vitest/config';

// Unit tests are pure and fast (`npm run check`). Integration and API tests talk to the real
// PostgreSQL and Redis named by DATABASE_URL / REDIS_URL; global-setup.ts gives the run its own
// migrated template database, and each test file clones its own database from it.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts', 'test/api/**/*.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        // The Redis-facing integration and API tests again, against a local Redis Cluster of three
        // masters that global-setup-cluster.ts starts (REDIS_CLUSTER_NODES): `npm run test:cluster`.
        // Left out: tests that never touch Redis (tools, files, WebSMS client) or run the service with
        // settings of their own (deployment, management script, dev logs).
        test: {
          name: 'cluster',
          include: ['test/integration/**/*.test.ts', 'test/api/**/*.test.ts'],
          exclude: [
            'test/integration/alert-rules.test.ts',
            'test/integration/grafana-dashboard.test.ts',
            'test/integration/migrations.test.ts',
            'test/integration/websms-client.test.ts',
            'test/integration/websms-sandbox.test.ts',
            'test/integration/callback-sender.test.ts',
            'test/integration/deployment.test.ts',
            'test/integration/ops-script.test.ts',
            'test/integration/dev-logs.test.ts',
          ],
          globalSetup: ['test/support/global-setup-cluster.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        // Real service processes (API + workers) under injected faults: `npm run test:faults`.
        test: {
          name: 'faults',
          include: ['test/faults/**/*.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 180_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
