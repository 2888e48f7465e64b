// Server-rendered HTML where every interpolated value is escaped unless it is already markup made by
// this same template tag: a row's reason, a file name or an id can never become markup.

export class Markup {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"'`]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function render(v: unknown): string {
  if (v instanceof Markup) return v.text;
  if (Array.isArray(v)) return v.map(render).join('');
  if (v === undefined || v === null || v === false) return '';
  return escapeHtml(String(v));
}

/** The template tag: `html\`<b>${name}</b>\`` escapes `name`; nested html`` stays markup. */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Markup {
  let out = strings[0]!;
  values.forEach((v, i) => {
    out += render(v) + strings[i + 1]!;
  });
  return new Markup(out);
}

export function page(title: string, body: Markup, opts: { nav?: boolean; csrf?: string } = {}): string {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · portrait-batch</title><link rel="stylesheet" href="/ui/assets/app.css"></head>
<body><header class="top"><a class="brand" href="/ui">portrait-batch</a>${
    opts.nav
      ? html`<nav><a href="/ui">Runs</a><a href="/ui#queues">Queues</a><form method="post" action="/ui/logout"><input type="hidden" name="csrf" value="${opts.csrf ?? ''}"><button class="link">Sign out</button></form></nav>`
      : ''
  }</header>
<main>${body}</main>
<script src="/ui/assets/app.js" defer></script></body></html>`.text;
}
