import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDb, type Db } from '../../src/db/database.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';

// A statement whose answer never comes (lost on its way back) fails after pg's read timeout
// (statement_timeout + 1 s). It is still its connection's active statement then: were the connection
// handed out again, everything sent on it would queue behind that answer. The pool here has a single
// connection, reached through a proxy that holds the answers of the one that sends the marker.

describe('a connection whose statement pg gave up on', () => {
  let proxy: TcpProxy;
  let db: Db;

  beforeAll(async () => {
    const server = new URL(inject('serverDatabaseUrl'));
    proxy = await startTcpProxy({ host: server.hostname, port: Number(server.port || 5432) });
    const url = new URL(server.toString());
    url.hostname = '127.0.0.1';
    url.port = String(proxy.port);
    db = createDb(url.toString(), { max: 1, statementTimeoutMs: 300 });
  });
  afterAll(async () => {
    await db?.destroy();
    await proxy?.close();
  });

  it('is closed, so the next statement gets a sound connection instead of waiting behind the lost answer', async () => {
    await sql`SELECT 1`.execute(db);
    const held = proxy.holdRepliesAfter('answer-lost-marker');
    const lost = sql`SELECT 'answer-lost-marker' AS marker`.execute(db);
    await held;
    await expect(lost).rejects.toThrow('Query read timeout');

    const { rows } = await sql<{ one: number }>`SELECT 1 AS one`.execute(db);
    expect(rows[0]?.one).toBe(1);
  });
});
