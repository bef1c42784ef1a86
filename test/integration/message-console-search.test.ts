import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { searchMessages, searchStatement } from '../../src/console/message-console-repository.ts';
import { PAGE_SIZE, parseSearch, type SearchCriteria } from '../../src/console/message-search.ts';
import { createTestEnv, type TestEnv } from '../support/context.ts';

// The console's search reads one page through an index whatever it is given: PostgreSQL's own plans
// for each kind of search, over a table large enough that a full scan would be chosen if it were cheaper.

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Relation Name'?: string;
  Plans?: PlanNode[];
}

const nodes = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(nodes)];

let env: TestEnv;

beforeAll(async () => {
  env = await createTestEnv();
  // 40,000 messages of 100 enterprises over about 280 days, oldest first.
  await sql`
    INSERT INTO user_sms_send (enterprise_number, phone, text, status, custom_id, message_id, created_at)
    SELECT lpad((g % 100)::text, 4, '0'), '+37529' || lpad((g % 20000)::text, 7, '0'), 'text ' || g, 'success',
      'c' || g, 76000000 + g, localtimestamp - make_interval(mins => (40000 - g) * 10)
    FROM generate_series(1, 40000) g`.execute(env.db);
  await sql`ANALYZE user_sms_send`.execute(env.db);
});

afterAll(async () => {
  await env?.cleanup();
});

async function plan(criteria: SearchCriteria): Promise<PlanNode[]> {
  const result = await sql<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>`EXPLAIN (FORMAT JSON) ${searchStatement(criteria)}`.execute(env.db);
  return nodes(result.rows[0]!['QUERY PLAN'][0]!.Plan);
}

const criteriaOf = (query: Record<string, string>) => {
  const form = parseSearch(query);
  expect(form.errors).toEqual({});
  return form.criteria;
};

describe('message console search', () => {
  it.each([
    ['nothing (the newest messages)', 'idx_user_sms_created_at', {}],
    ['a time range', 'idx_user_sms_created_at', { from: '2026-01-01T00:00', to: '2026-06-30T23:59' }],
    // Either index ordered by time stops after a page; which one is cheaper depends on the enterprise's share.
    ['an enterprise', 'idx_user_sms_enterprise_created|idx_user_sms_created_at', { enterprise: '0012' }],
    ['an enterprise and a time range', 'idx_user_sms_enterprise_created|idx_user_sms_created_at', { enterprise: '0012', from: '2026-01-01T00:00', to: '2026-06-30T23:59' }],
    ["an enterprise's next page", 'idx_user_sms_enterprise_created|idx_user_sms_created_at', { enterprise: '0012', before: '20012' }],
    ['a phone', 'idx_user_sms_phone', { phone: '+375290004242' }],
    ['a custom_id', 'idx_user_sms_custom_id', { custom_id: 'c4242' }],
    ["WebSMS's message_id", 'idx_user_sms_message_id', { message_id: '76004242' }],
    ['our id', 'user_sms_send_pkey', { id: '4242' }],
  ])('by %s reads %s, never the whole table', async (_what, index, query: Record<string, string>) => {
    const planned = await plan(criteriaOf(query));
    const scans = planned.filter((node) => node['Relation Name'] === 'user_sms_send' || node['Node Type'].includes('Index'));
    expect(scans.map((node) => node['Node Type'])).not.toContain('Seq Scan');
    const shape = JSON.stringify(planned.map((n) => [n['Node Type'], n['Index Name']]));
    expect(planned.some((node) => index.split('|').includes(node['Index Name'] ?? '')), shape).toBe(true);
    // Read newest first from an index ordered by time, a page stops the scan: no sort over all rows.
    if (index.includes('created')) {
      expect(planned.map((node) => node['Node Type']), shape).not.toContain('Sort');
    }
  });

  it('returns one page at most, newest first, and the next page continues where it ended', async () => {
    const first = await searchMessages(env.db, criteriaOf({ enterprise: '0012' }));
    expect(first).toHaveLength(PAGE_SIZE + 1);
    const page = first.slice(0, PAGE_SIZE);
    const ids = page.map((m) => m.id);
    expect(ids).toEqual([...ids].sort((a, b) => b - a));
    const next = await searchMessages(env.db, criteriaOf({ enterprise: '0012', before: String(ids.at(-1)) }));
    expect(next[0]!.id).toBe(first[PAGE_SIZE]!.id);
    expect(next.every((m) => m.id < ids.at(-1)!)).toBe(true);
  });

  it('finds nothing, rather than failing, for a cursor that names no message', async () => {
    expect(await searchMessages(env.db, criteriaOf({ before: '999999999' }))).toEqual([]);
  });
});
