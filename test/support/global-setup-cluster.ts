import type { TestProject } from 'vitest/node';
import setup from './global-setup.ts';
import { startLocalCluster } from './redis-topology.ts';

// The `cluster` project: the Redis-facing integration tests against a Redis Cluster of three masters
// (real redis-server processes on free loopback ports, slots assigned by redis-cli), started here and
// stopped when the run ends. REDIS_CLUSTER_NODES set to an existing cluster is used instead.
// The variable is set in this process's environment before any test worker or service process
// starts, so all of them inherit it (test/support/test-redis.ts, the service's config).
export default async function clusterSetup(project: TestProject) {
  const cluster = process.env.REDIS_CLUSTER_NODES ? undefined : await startLocalCluster();
  if (cluster) process.env.REDIS_CLUSTER_NODES = cluster.nodesVariable;
  let teardown: (() => Promise<void>) | undefined;
  try {
    teardown = await setup(project);
  } catch (error) {
    await cluster?.close();
    throw error;
  }
  return async () => {
    await teardown?.();
    await cluster?.close();
  };
}
