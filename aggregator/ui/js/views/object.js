// One object: what it is, its status and state, its attributes, the links in and out, the
// cliques it belongs to, what depends on it (impact), and the timeline of its versions.

import { api, idPath } from '../api.js';
import { h, replace, table, when, statusDot, debounce } from '../dom.js';

/** The attributes as label/value pairs, typed ones first. */
function attributeRows(attributes) {
  const rows = [];
  const { extra = {}, ...typed } = attributes || {};
  for (const [key, value] of Object.entries(typed)) {
    if (value === null || (Array.isArray(value) && !value.length)) continue;
    rows.push([key, Array.isArray(value) ? value.join(', ') : String(value)]);
  }
  for (const [key, value] of Object.entries(extra)) {
    rows.push([key, typeof value === 'object' ? JSON.stringify(value) : String(value)]);
  }
  return rows;
}

/** What differs between two versions, as short phrases. */
function changes(older, newer) {
  if (!older) return ['first seen'];
  const out = [];
  if (older.status?.level !== newer.status?.level) out.push(`status ${older.status?.level} → ${newer.status?.level}`);
  if (older.state !== newer.state) out.push(`${older.state} → ${newer.state}`);
  if (older.stale !== newer.stale) out.push(newer.stale ? 'went stale' : 'back from stale');
  if (older.name !== newer.name) out.push(`renamed ${older.name} → ${newer.name}`);
  const before = Object.fromEntries(attributeRows(older.attributes));
  const after = Object.fromEntries(attributeRows(newer.attributes));
  for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
    if (before[key] !== after[key]) out.push(`${key}: ${before[key] ?? '—'} → ${after[key] ?? '—'}`);
  }
  return out.length ? out : ['seen again'];
}

export async function render(main, { env, at, id, link, tree, onChange }) {
  const draw = async () => {
    const [object, outgoing, incoming, cliques] = await Promise.all([
      api(idPath('/inventory', id), { env_name: env, at }),
      api('/links', { env_name: env, source_id: id, at, limit: 1000 }),
      api('/links', { env_name: env, target_id: id, at, limit: 1000 }),
      api('/cliques', { env_name: env, object: id, at, limit: 1000 }),
    ]);
    const versions = await api(idPath('/inventory', `${id}/versions`), { env_name: env, limit: 50 }).catch(() => []);
    const other = (l) => (l.source === id ? l.target : l.source);
    const linkRows = [...outgoing.links, ...incoming.links].map((l) => [
      l.link_type, l.source === id ? 'out' : 'in',
      h('a', { href: link(['env', env, 'object', other(l)]), text: other(l) }),
      h('span', { class: l.state === 'down' ? 'st-error-text' : '', text: l.state }),
    ]);
    const own = cliques.cliques.find((c) => c.focal_point === id);
    const impactBox = h('div', { class: 'impact', 'aria-live': 'polite' });
    const timeline = versions.slice().reverse().map((v, i, all) => ({ v, what: changes(all[i - 1]?.object, v.object) })).reverse();
    replace(main,
      h('h1', {}, statusDot(object), ` ${object.name} `, h('span', { class: 'kind', text: object.type })),
      h('p', { class: 'facts' },
        `Status ${object.status?.level || 'unknown'}${object.status?.text ? `: ${object.status.text}` : ''}; ${object.state}`,
        object.stale ? '; stale (its agent is away)' : '',
        object.host ? ['; on ', h('a', { href: link(['env', env, 'host', object.host]), text: object.host })] : '',
        object.parent_id ? ['; in ', h('a', { href: link(['env', env, 'object', object.parent_id]), text: object.parent_id })] : ''),
      h('div', { class: 'actions' },
        own ? h('a', { class: 'button', id: 'open-clique', href: link(['env', env, 'clique', id]), text: 'Clique graph' }) : null,
        at ? null : h('button', { type: 'button', id: 'show-impact', onclick: () => impact(env, [id], impactBox, link), text: 'What depends on it' })),
      impactBox,
      h('section', {}, table('Attributes', ['Attribute', 'Value'], [['id', object.id], ...attributeRows(object.attributes),
        ['first seen', when(object.first_seen)], ['last seen', when(object.last_seen)]])),
      h('section', {}, table(`Links (${linkRows.length})`, ['Type', 'Direction', 'Other end', 'State'], linkRows)),
      h('section', {}, h('h2', { text: 'Cliques' }), cliques.cliques.length
        ? h('ul', {}, cliques.cliques.map((c) => h('li', {}, h('a', { href: link(['env', env, 'clique', c.focal_point]), text: c.focal_point }), ` (${c.nodes.length} objects)`)))
        : h('p', { class: 'quiet', text: 'In no clique.' })),
      h('section', {}, h('h2', { text: 'History' }), h('ol', { class: 'timeline', 'aria-label': 'Versions, newest first' },
        timeline.map(({ v, what }) => h('li', {},
          h('a', { href: link(['env', env, 'object', id], { at: v.valid_from }) }, h('time', { datetime: v.valid_from, text: when(v.valid_from) })),
          v.valid_to ? ` until ${when(v.valid_to)}` : ' (current)', `: ${what.join('; ')}`)))));
    tree?.mark(id);
    const path = object.id_path.split('/').filter(Boolean).slice(1, -1);
    if (tree && !tree.items.has(id)) await tree.reveal(path, id).catch(() => {});
  };
  await draw();
  if (at) return null;
  const redraw = debounce(() => draw().catch(() => {}), 500);
  return onChange((event) => {
    if (event.key === id || (event.kind === 'link' && event.key.includes(id))) redraw();
  });
}

/** Fills `box` with what depends on `objects`, by type. */
export async function impact(env, objects, box, link) {
  replace(box, h('p', { text: 'Working out what depends on it…' }));
  try {
    const result = await api('/impact', { env_name: env, object: objects });
    const groups = Object.entries(result.dependents);
    replace(box, h('h2', { text: `What depends on it (${result.total})` }),
      groups.length ? groups.map(([type, list]) => h('section', { 'data-impact': type },
        h('h3', { text: `${type} (${list.length})` }),
        h('ul', {}, list.map((d) => h('li', {}, h('a', { href: link(['env', env, 'object', d.id]), text: d.name }),
          d.state === 'down' ? ' (down)' : ''))))) : h('p', { text: 'Nothing depends on it.' }));
  } catch (error) {
    replace(box, h('p', { class: 'error', text: error.message }));
  }
}
