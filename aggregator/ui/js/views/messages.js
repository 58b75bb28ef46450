// Messages of an environment, newest first, filtered by level, source, object and time; new
// ones arrive from the live stream when they match.

import { api } from '../api.js';
import { h, replace, when } from '../dom.js';

function localInput(id, label, iso) {
  const input = h('input', { type: 'datetime-local', step: '1', id, name: id });
  if (iso) {
    const date = new Date(iso);
    input.value = new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  }
  return [h('label', { for: id, text: label }), input];
}

export async function render(main, { env, at, params, link, navigate, onChange }) {
  const filters = {
    level: params.get('level') || '', source: params.get('source') || '',
    object: params.get('object') || '', from: params.get('from') || '', to: params.get('to') || at || '',
  };
  const level = h('select', { id: 'level', name: 'level' },
    ['', 'info', 'warning', 'error'].map((l) => h('option', { value: l, selected: l === filters.level, text: l || 'any' })));
  const source = h('input', { id: 'source', name: 'source', value: filters.source });
  const object = h('input', { id: 'object', name: 'object', value: filters.object });
  const [fromLabel, from] = localInput('from', 'From', filters.from);
  const [toLabel, to] = localInput('to', 'Until', filters.to);
  const form = h('form', { class: 'filters', 'aria-label': 'Filter messages' },
    h('label', { for: 'level', text: 'Level' }), level, h('label', { for: 'source', text: 'Source' }), source,
    h('label', { for: 'object', text: 'Object' }), object, fromLabel, from, toLabel, to,
    h('button', { type: 'submit', text: 'Filter' }));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const iso = (input) => (input.value ? new Date(input.value).toISOString() : '');
    navigate(['env', env, 'messages'], { level: level.value, source: source.value.trim(), object: object.value.trim(), from: iso(from), to: iso(to), at: at || null });
  });
  const rows = h('tbody', {});
  const more = h('button', { type: 'button', id: 'older', hidden: true, text: 'Older' });
  replace(main, h('h1', { text: `Messages of ${env}` }), form,
    h('table', { class: 'messages' }, h('caption', { class: 'visually-hidden', text: 'Messages, newest first' }),
      h('thead', {}, h('tr', {}, ['Time', 'Level', 'Source', 'Object', 'Text'].map((t) => h('th', { scope: 'col', text: t })))), rows),
    more);
  const row = (m) => h('tr', { class: `level-${m.level}` },
    h('td', {}, h('time', { datetime: m.at, text: when(m.at) })), h('td', { text: m.level }), h('td', { text: m.source }),
    h('td', {}, m.related_object ? h('a', { href: link(['env', env, 'object', m.related_object]), text: m.related_object }) : ''),
    h('td', { text: m.text }));
  const query = {
    env_name: env, order: 'newest', limit: 100, level: filters.level, source: filters.source,
    related_object: filters.object, start_time: filters.from, end_time: filters.to,
  };
  let cursor = null;
  const page = async () => {
    const found = await api('/messages', { ...query, cursor });
    rows.append(...found.messages.map(row));
    cursor = found.next_cursor;
    more.hidden = !cursor;
    if (!rows.children.length) rows.append(h('tr', { class: 'empty' }, h('td', { colspan: 5, text: 'No messages match.' })));
  };
  more.addEventListener('click', () => page().catch(() => {}));
  await page();
  if (at || filters.to) return null;
  return onChange((event) => {
    if (event.kind !== 'message' || !event.data) return;
    const m = event.data;
    if ((filters.level && m.level !== filters.level) || (filters.source && m.source !== filters.source)
      || (filters.object && m.related_object !== filters.object)) return;
    rows.querySelector('.empty')?.remove();
    rows.prepend(row(m));
  });
}
