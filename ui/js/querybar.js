// The query bar: the query language with its errors shown at their position as people type
// (`/api/v1/validate`), and completion of field names (`/api/v1/fields`) and of values (the
// facets of the field), as an ARIA combobox driven by the keyboard.

import { html, useEffect, useRef, useState } from '../vendor/preact-htm.mjs';
import { api, aborted } from './api.js';
import { quote } from './query.js';

let catalog = null;
/** The query language's fields and commands, fetched once. */
export function fieldCatalog() {
  if (!catalog) catalog = api('fields').catch(() => ({ fields: [], commands: [], paths: [] }));
  return catalog;
}

/** The word being typed at `caret`: its start and text. */
function wordAt(text, caret) {
  let start = caret;
  let inQuote = false;
  for (let i = 0; i < caret; i++) if (text[i] === '"' && text[i - 1] !== '\\') inQuote = !inQuote;
  while (start > 0) {
    const c = text[start - 1];
    if (!inQuote && /[\s(|,]/.test(c)) break;
    start--;
  }
  if (text[start] === '-') start++;
  return { start, word: text.slice(start, caret) };
}

export function QueryBar({ value, onSubmit, rangeParams }) {
  const [text, setText] = useState(value || '');
  const [error, setError] = useState(null);
  const [options, setOptions] = useState([]);
  const [active, setActive] = useState(-1);
  const input = useRef(null);
  const word = useRef({ start: 0, word: '' });
  const pending = useRef(null);

  useEffect(() => setText(value || ''), [value]);

  // Validation as people type: the latest request wins.
  useEffect(() => {
    const controller = new AbortController();
    const timer = setTimeout(() => {
      if (!text.trim()) { setError(null); return; }
      api('validate', { q: text }, { signal: controller.signal })
        .then((answer) => setError(answer.ok ? null : { message: answer.error, position: answer.position }))
        .catch((e) => { if (!aborted(e)) setError({ message: e.message, position: null }); });
    }, 180);
    return () => { clearTimeout(timer); controller.abort(); };
  }, [text]);

  const suggest = async (caret, current) => {
    const at = wordAt(current, caret);
    word.current = at;
    if (pending.current) pending.current.abort();
    const colon = at.word.indexOf(':');
    if (colon < 0) {
      const { fields, commands } = await fieldCatalog();
      const afterPipe = current.slice(0, at.start).includes('|');
      const prefix = at.word.toLowerCase();
      const names = afterPipe
        ? [...commands.map((c) => ({ label: c, insert: c + ' ', hint: 'command' })),
          ...fields.map((f) => ({ label: f.name, insert: f.name, hint: f.kind }))]
        : fields.map((f) => ({ label: f.name, insert: f.name + ':', hint: f.kind }));
      const list = prefix ? names.filter((n) => n.label.toLowerCase().startsWith(prefix)) : [];
      setOptions(list.filter((n) => n.label !== at.word).slice(0, 12));
      setActive(list.length ? 0 : -1);
      return;
    }
    const field = at.word.slice(0, colon);
    const typed = at.word.slice(colon + 1).replace(/^"/, '').toLowerCase();
    const { fields } = await fieldCatalog();
    if (!fields.some((f) => f.name === field || (f.aliases || []).includes(field))) { setOptions([]); return; }
    const controller = new AbortController();
    pending.current = controller;
    try {
      const q = typed ? `${field}:*${quote(typed).replace(/^"|"$/g, '')}*` : '';
      const answer = await api('facets', { ...rangeParams, q: q && !/["\\]/.test(typed) ? q : '', fields: field, limit: 20 }, { signal: controller.signal });
      const values = ((answer.facets[0] || {}).values || [])
        .filter((v) => v.value !== null && String(v.value).toLowerCase().includes(typed));
      setOptions(values.map((v) => ({ label: String(v.value), insert: `${field}:${quote(v.value)}`, hint: String(v.count), replaceWord: true })));
      setActive(values.length ? 0 : -1);
    } catch (e) {
      if (!aborted(e)) setOptions([]);
    }
  };

  const accept = (option) => {
    const { start, word: w } = word.current;
    const end = start + w.length;
    const insert = option.replaceWord ? option.insert + ' ' : option.insert;
    const next = text.slice(0, start) + insert + text.slice(end);
    setText(next);
    setOptions([]);
    setActive(-1);
    requestAnimationFrame(() => {
      const el = input.current;
      if (!el) return;
      el.focus();
      el.setSelectionRange(start + insert.length, start + insert.length);
      if (!option.replaceWord) suggest(start + insert.length, next);
    });
  };

  const onKeyDown = (e) => {
    const open = options.length > 0;
    if (e.key === 'ArrowDown' && open) { e.preventDefault(); setActive((active + 1) % options.length); }
    else if (e.key === 'ArrowUp' && open) { e.preventDefault(); setActive((active - 1 + options.length) % options.length); }
    else if ((e.key === 'Tab' || e.key === 'Enter') && open && active >= 0) { e.preventDefault(); accept(options[active]); }
    else if (e.key === 'Escape' && open) { e.preventDefault(); setOptions([]); }
    else if (e.key === 'Enter') { e.preventDefault(); setOptions([]); onSubmit(text.trim()); }
  };

  const listId = 'query-suggestions';
  return html`<div class="q">
    <input id="query" type="text" aria-label="Query" role="combobox" autocomplete="off" spellcheck="false"
      aria-autocomplete="list" aria-expanded=${options.length > 0} aria-controls=${listId}
      aria-activedescendant=${active >= 0 && options.length ? `${listId}-${active}` : undefined}
      aria-invalid=${error ? 'true' : 'false'} aria-describedby=${error ? 'query-error' : undefined}
      placeholder="verb:delete resource:secrets -user:system:*   |  stats count() by user"
      ref=${input} value=${text}
      onInput=${(e) => { const v = e.currentTarget.value; setText(v); suggest(e.currentTarget.selectionStart, v); }}
      onKeyDown=${onKeyDown}
      onBlur=${() => setTimeout(() => setOptions([]), 150)} />
    ${options.length > 0 && html`<ul class="suggest" role="listbox" id=${listId} aria-label="Suggestions">
      ${options.map((o, i) => html`<li id=${`${listId}-${i}`} role="option" aria-selected=${i === active}
        onMouseDown=${(e) => { e.preventDefault(); accept(o); }}><span>${o.label}</span><span class="hint">${o.hint}</span></li>`)}
    </ul>`}
    ${error && html`<div class="query-error" id="query-error" role="alert">${error.position !== null
      ? html`<span class="pad">${text.slice(0, error.position)}</span>^ ${error.message}`
      : error.message}</div>`}
  </div>`;
}
