// The shell: login, the header (environment, time travel, live state, user), the tree on the
// left and one view in the main area, chosen by the address's fragment:
//
//   #/                              environments and their health
//   #/env/E                         an environment's dashboard
//   #/env/E/object/ID               an object: attributes, status, links, cliques, versions
//   #/env/E/clique/ID               a focal point's clique as a layered graph, with its diagnosis
//   #/env/E/host/H                  every object and link of one host as a graph
//   #/env/E/messages                messages, filtered, live
//   #/env/E/diff?from=…&to=…        what changed between two snapshots or times
//
// `?at=<RFC 3339>` on any environment view shows it as it was then (the stream pauses).

import { api, session } from './api.js';
import { h, replace, debounce, when } from './dom.js';
import { follow, onChange, liveState } from './live.js';
import { Tree } from './tree.js';
import * as login from './views/login.js';
import * as home from './views/home.js';
import * as environment from './views/environment.js';
import * as object from './views/object.js';
import * as clique from './views/clique.js';
import * as host from './views/host.js';
import * as messages from './views/messages.js';
import * as diff from './views/diff.js';

const VIEWS = { object, clique, host, messages, diff };

/** The current route: `{path: [...segments], params: URLSearchParams}`. */
function route() {
  const fragment = window.location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = fragment.split('?');
  return { path: path.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

/** A fragment link; `at` carries over unless `params` says otherwise. */
export function link(segments, params = {}) {
  const merged = new URLSearchParams();
  const at = route().params.get('at');
  if (at && !('at' in params)) merged.set('at', at);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') merged.set(key, value);
  }
  const query = merged.toString();
  return `#/${segments.map(encodeURIComponent).join('/')}${query ? `?${query}` : ''}`;
}

export function navigate(segments, params) {
  window.location.hash = link(segments, params);
}

const shell = {
  tree: null,
  treeKey: null,
  cleanup: null,
};

function header(env, at) {
  const user = session.user;
  const top = document.getElementById('top');
  const environments = h('select', { id: 'env-select', 'aria-label': 'Environment' },
    h('option', { value: '', text: 'Environments…' }));
  api('/environment_configs').then((list) => {
    for (const e of list) environments.append(h('option', { value: e.name, selected: e.name === env, text: e.name }));
  }).catch(() => {});
  environments.addEventListener('change', () => navigate(environments.value ? ['env', environments.value] : []));
  const nav = env ? h('nav', { 'aria-label': 'Views' },
    h('a', { href: link(['env', env]), text: 'Dashboard' }),
    h('a', { href: link(['env', env, 'messages']), text: 'Messages' }),
    h('a', { href: link(['env', env, 'diff'], { at: null }), text: 'Diff' })) : null;
  const timebar = env ? timeTravel(env, at) : null;
  replace(top,
    h('a', { class: 'brand', href: '#/', text: 'Calipso' }),
    environments, nav, timebar,
    h('span', { id: 'live-state', role: 'status', 'aria-live': 'polite', 'data-state': liveState(), text: liveState() }),
    h('span', { class: 'user' }, user ? `${user.username}` : '',
      h('button', { type: 'button', id: 'logout', onclick: logout, text: 'Log out' })));
}

function timeTravel(env, at) {
  const input = h('input', { type: 'datetime-local', step: '1', id: 'at-input', 'aria-label': 'Show as it was at' });
  if (at) {
    const date = new Date(at);
    const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
    input.value = local.toISOString().slice(0, 19);
  }
  const snapshots = h('select', { id: 'snapshot-select', 'aria-label': 'Snapshot' }, h('option', { value: '', text: 'Snapshots…' }));
  api('/snapshots', { env_name: env }).then((list) => {
    for (const s of list) snapshots.append(h('option', { value: s.at, selected: s.at === at, text: `${s.name} (${when(s.at)})` }));
  }).catch(() => {});
  const go = (value) => {
    const { path, params } = route();
    const next = Object.fromEntries(params);
    next.at = value;
    window.location.hash = link(path, next);
  };
  input.addEventListener('change', () => { if (input.value) go(new Date(input.value).toISOString()); });
  snapshots.addEventListener('change', () => { if (snapshots.value) go(snapshots.value); });
  return h('form', { class: 'timebar', role: 'search', 'aria-label': 'Time travel', onsubmit: (e) => e.preventDefault() },
    input, snapshots,
    h('button', { type: 'button', id: 'live-button', 'aria-pressed': at ? 'false' : 'true', onclick: () => go(null), text: 'Live' }));
}

async function logout() {
  try { await api('/auth/tokens', {}, { method: 'DELETE' }); } catch { /* the token may be gone already */ }
  session.end();
  follow(null);
  window.location.hash = '#/login';
}

/** The tree and its search for `env` at `at`, rebuilt only when either changes. */
async function sidebar(env, at) {
  const side = document.getElementById('side');
  const key = `${env}|${at || ''}`;
  if (!env) {
    side.replaceChildren();
    shell.tree = null;
    shell.treeKey = null;
    return;
  }
  if (shell.treeKey === key) return;
  shell.treeKey = key;
  const holder = h('div', { class: 'tree-holder' });
  const results = h('ul', { class: 'search-results', 'aria-label': 'Search results', hidden: true });
  const search = h('input', { type: 'search', id: 'tree-search', placeholder: 'Search by name', 'aria-label': 'Search objects by name' });
  const run = debounce(async () => {
    const text = search.value.trim();
    if (text.length < 2) { results.hidden = true; holder.hidden = false; return; }
    const escaped = text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    try {
      const page = await api('/inventory', { env_name: env, name: `(?i)${escaped}`, limit: 50, at });
      replace(results, page.objects.length ? page.objects.map((o) => h('li', {},
        h('a', { href: link(['env', env, 'object', o.id]), text: o.name }),
        h('span', { class: 'meta', text: ` ${o.type}${o.host ? ` on ${o.host}` : ''}` })))
        : h('li', { text: 'Nothing matches.' }));
    } catch (error) {
      replace(results, h('li', { class: 'error', text: error.message }));
    }
    results.hidden = false;
    holder.hidden = true;
  }, 250);
  search.addEventListener('input', run);
  replace(side, h('label', { for: 'tree-search', class: 'visually-hidden', text: 'Search' }), search, results, holder);
  const tree = new Tree(holder, { environment: env, at, href: (row) => link(['env', env, 'object', row.id]) });
  shell.tree = tree;
  try {
    await tree.load();
  } catch (error) {
    replace(holder, h('p', { class: 'error', text: error.message }));
  }
}

async function render() {
  const { path, params } = route();
  if (!session.token && path[0] !== 'login') {
    window.location.hash = '#/login';
    return;
  }
  shell.cleanup?.();
  shell.cleanup = null;
  const main = document.getElementById('main');
  if (path[0] === 'login') {
    follow(null);
    replace(document.getElementById('top'), h('span', { class: 'brand', text: 'Calipso' }));
    document.getElementById('side').replaceChildren();
    shell.treeKey = null;
    await login.render(main, { navigate });
    return;
  }
  const env = path[0] === 'env' ? path[1] : null;
  const at = env ? params.get('at') : null;
  follow(env && !at ? env : null);
  header(env, at);
  const banner = at ? h('p', { class: 'banner', role: 'note' }, `Shown as it was at ${when(at)}. `,
    h('a', { href: link(path, { ...Object.fromEntries(params), at: null }), text: 'Back to live' })) : null;
  const content = h('div', { class: 'view' });
  replace(main, banner, content);
  const ctx = { env, at, params, link, navigate, tree: null, onChange };
  const treeReady = sidebar(env, at);
  try {
    if (!env) {
      shell.cleanup = await home.render(content, ctx);
    } else {
      await treeReady;
      ctx.tree = shell.tree;
      const view = VIEWS[path[2]] || environment;
      shell.cleanup = await view.render(content, { ...ctx, id: path[3] });
    }
  } catch (error) {
    replace(content, h('p', { class: 'error', role: 'alert', text: error.message }));
  }
  main.focus({ preventScroll: true });
}

// The tree follows live changes whatever the view; after lost changes, everything is re-read.
onChange((event) => {
  if (event.kind === 'reset') {
    shell.treeKey = null;
    render();
  } else {
    shell.tree?.apply(event);
  }
});
window.addEventListener('hashchange', render);
// A stream left open by a page being left would hold one of the browser's few connections to
// this server until the server next writes to it.
window.addEventListener('pagehide', () => follow(null));
window.addEventListener('calipso:logged-out', () => { window.location.hash = '#/login'; });
render();
