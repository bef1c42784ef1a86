import { Router } from 'express';
import type { Db } from '../db/database.ts';
import { checkReportParams, maskReportPhones, REPORTS } from '../reports/catalogue.ts';
import { HttpError } from './errors.ts';

/**
 * `GET /reports` (the catalogue) and `GET /reports/{name}?enterprise=&limit=`, for operators only
 * (app.ts mounts the guard). Phones are masked; texts are the reports' own short previews.
 */
export function reportRoutes(db: Db): Router {
  const router = Router();

  router.get('/reports', (_req, res) => {
    res.json({ reports: [...REPORTS.values()].map((r) => ({ name: r.name, description: r.description, enterprise: r.enterprise, default_limit: r.defaultLimit })) });
  });

  router.get('/reports/:name', async (req, res) => {
    const report = REPORTS.get(req.params.name ?? '');
    if (!report) throw new HttpError(404, `Unknown report "${req.params.name}"; reports: ${[...REPORTS.keys()].join(', ')}`);
    const checked = checkReportParams(report, { enterprise: queryString(req.query.enterprise), limit: queryString(req.query.limit) });
    if (!checked.ok) {
      throw new HttpError(400, `Invalid request: ${checked.field} ${checked.message}`, { errors: [{ field: checked.field, message: checked.message }] });
    }
    const { enterprise } = checked.params;
    const rows = await report.run(db, checked.params);
    res.json({
      report: report.name,
      generated_at: new Date().toISOString(),
      enterprise: enterprise ?? null,
      limit: checked.params.limit,
      rows: maskReportPhones(report, rows),
    });
  });
  return router;
}

/** A query parameter given once as text; repeated or nested forms count as invalid text. */
function queryString(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  return typeof value === 'string' ? value : '';
}
