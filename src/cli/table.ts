// Aligned plain-text tables in psql's layout, which is what operators saw when they ran the old
// documentation's queries by hand.

export interface TableColumn {
  key: string;
  align: 'left' | 'right';
}

/** Characters a terminal draws two cells wide (CJK, emoji); everything else counts one. */
function displayWidth(text: string): number {
  let width = 0;
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    width += code >= 0x1100 && (code <= 0x115f || (code >= 0x2e80 && code <= 0xa4cf) || (code >= 0xac00 && code <= 0xd7a3) || (code >= 0xf900 && code <= 0xfaff) || (code >= 0xfe30 && code <= 0xfe4f) || (code >= 0xff00 && code <= 0xff60) || (code >= 0x1f300 && code <= 0x1faff)) ? 2 : 1;
  }
  return width;
}

function pad(text: string, width: number, align: 'left' | 'right'): string {
  const fill = ' '.repeat(Math.max(0, width - displayWidth(text)));
  return align === 'left' ? text + fill : fill + text;
}

/** Local wall time, e.g. 2026-11-23 14:05:09 (the table's TIMESTAMP columns are server-local). */
export function formatLocalTime(date: Date): string {
  const two = (n: number) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

export function formatCell(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (value instanceof Date) return formatLocalTime(value);
  if (typeof value === 'string') return value.replace(/\s*[\r\n]+\s*/g, ' ↵ ');
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  return JSON.stringify(value);
}

export function formatTable(columns: readonly TableColumn[], rows: readonly Record<string, unknown>[]): string {
  const cells = rows.map((row) => columns.map((c) => formatCell(row[c.key])));
  const widths = columns.map((c, i) => Math.max(displayWidth(c.key), ...cells.map((r) => displayWidth(r[i] ?? ''))));
  const line = (values: string[], aligns: Array<'left' | 'right'>) =>
    ` ${values.map((v, i) => pad(v, widths[i] ?? 0, aligns[i] ?? 'left')).join(' | ')}`.trimEnd();
  const header = line(
    columns.map((c) => c.key),
    columns.map(() => 'left'),
  );
  const rule = widths.map((w) => '-'.repeat(w + 2)).join('+');
  const body = cells.map((r) => line(r, columns.map((c) => c.align)));
  const count = `(${rows.length} ${rows.length === 1 ? 'row' : 'rows'})`;
  return [header, rule, ...body, count].join('\n');
}
