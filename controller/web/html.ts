/**
 * HTML built by tagged templates that escape every interpolated value: text from a guest (a console
 * line with `<script>`) or a node reaches the page as text, always. Only `Html` values (built by this
 * module) pass through unescaped.
 */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"'`]/g, (c) => `&#${c.charCodeAt(0)};`);
}

type Value = string | number | boolean | null | undefined | Html | readonly Value[];

function render(v: Value): string {
  if (v === null || v === undefined || v === false) return '';
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return v.map(render).join('');
  return escapeHtml(String(v));
}

export function html(strings: TemplateStringsArray, ...values: Value[]): Html {
  let out = strings[0] ?? '';
  values.forEach((v, i) => (out += render(v) + (strings[i + 1] ?? '')));
  return new Html(out);
}

/** JSON for a `<script type="application/json">` block: `<` escaped so no text can end the block. */
export function jsonScript(id: string, value: unknown): Html {
  const text = JSON.stringify(value).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');
  return new Html(`<script type="application/json" id="${escapeHtml(id)}">${text}</script>`);
}

export function page(title: string, body: Html, opts: { scripts?: string[]; nav?: boolean } = {}): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · eve-diag</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/app.css">
${(opts.scripts ?? []).filter((s) => s.endsWith('.css')).map((s) => html`<link rel="stylesheet" href="${s}">`)}
</head>
<body>
${opts.nav === false ? '' : html`<nav><a href="/" class="brand">eve-diag</a> <a href="/">Fleet</a> <a href="/reports">Reports</a><form method="post" action="/logout"><button>Log out</button></form></nav>`}
<main>
${body}
</main>
${(opts.scripts ?? []).filter((s) => s.endsWith('.js')).map((s) => html`<script src="${s}"></script>`)}
</body>
</html>
`.value;
}
