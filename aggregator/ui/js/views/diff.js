// What changed in an environment between two snapshots or times: objects added, removed and
// changed attribute by attribute, links added, removed and changing state, cliques whose
// membership changed.

import { api } from '../api.js';
import { h, replace, when } from '../dom.js';

function point(id, label, snapshots, value) {
  const list = `${id}-choices`;
  return [h('label', { for: id, text: label }),
    h('input', { id, name: id, list, value: value || '', placeholder: 'snapshot name or 2026-12-04T10:00:00Z', size: 32 }),
    h('datalist', { id: list }, snapshots.map((s) => h('option', { value: s.name, text: `${s.name} (${when(s.at)})` })))];
}

function section(title, items, render) {
  return h('section', { 'data-diff': title },
    h('h3', { text: `${title} (${items.length})` }),
    items.length ? h('ul', {}, items.map((item) => h('li', {}, render(item)))) : null);
}

export async function render(main, { env, params, link, navigate }) {
  const snapshots = await api('/snapshots', { env_name: env });
  const [fromLabel, from, fromChoices] = point('diff-from', 'From', snapshots, params.get('from'));
  const [toLabel, to, toChoices] = point('diff-to', 'To', snapshots, params.get('to'));
  const form = h('form', { class: 'filters', 'aria-label': 'Compare' }, fromLabel, from, fromChoices, toLabel, to, toChoices,
    h('button', { type: 'submit', text: 'Compare' }));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    navigate(['env', env, 'diff'], { from: from.value.trim(), to: to.value.trim(), at: null });
  });
  const result = h('div', { class: 'diff', 'aria-live': 'polite' });
  replace(main, h('h1', { text: `What changed in ${env}` }), form, result);
  if (!params.get('from')) {
    replace(result, h('p', { class: 'quiet', text: snapshots.length ? 'Pick two snapshots or times (To defaults to now).' : 'No snapshot yet: compare two times, or take a snapshot with `calipso snapshot create`.' }));
    return null;
  }
  const diff = await api('/diff', { env_name: env, from: params.get('from'), to: params.get('to') });
  const objectLink = (o) => [h('a', { href: link(['env', env, 'object', o.id], { at: null }), text: o.name }), ` ${o.type}${o.host ? ` on ${o.host}` : ''}`];
  const linkText = (l) => `${l.link_type} ${l.source} → ${l.target}`;
  replace(result,
    h('p', { text: `From ${diff.from.point} (${when(diff.from.at)}) to ${diff.to.point} (${when(diff.to.at)})` }),
    h('h2', { text: 'Objects' }),
    section('Added', diff.objects.added, objectLink),
    section('Removed', diff.objects.removed, objectLink),
    section('Changed', diff.objects.changed, (c) => [...objectLink(c), h('ul', {}, c.changes.map((ch) => h('li', { text: `${ch.path}: ${JSON.stringify(ch.from)} → ${JSON.stringify(ch.to)}` })))]),
    h('h2', { text: 'Links' }),
    section('Links added', diff.links.added, linkText),
    section('Links removed', diff.links.removed, linkText),
    section('Links changing state', diff.links.state_changed, (l) => `${linkText(l)}: ${l.from} → ${l.to}`),
    h('h2', { text: 'Cliques' }),
    section('Cliques added', diff.cliques.added, (f) => f),
    section('Cliques removed', diff.cliques.removed, (f) => f),
    section('Cliques changed', diff.cliques.changed, (c) => `${c.focal_point}: +${c.added_nodes.length} −${c.removed_nodes.length}`));
  return null;
}
