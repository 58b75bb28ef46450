// An environment's dashboard: objects by type and status, links by type and state, the agents
// (each host opens its graph), the latest messages. Kept current from the live stream.

import { api } from '../api.js';
import { h, replace, table, when, debounce, statusClass } from '../dom.js';
import { summary, lastMessages } from './home.js';
import { TYPE_NAMES } from '../tree.js';

const STATUSES = ['ok', 'warning', 'error', 'unknown'];

export async function render(main, { env, at, link, onChange }) {
  const body = h('div', { class: 'dashboard' });
  replace(main, h('h1', { text: env }), body);
  const draw = async () => {
    const [aggregates, agents, latest] = await Promise.all([
      api('/aggregates', { env_name: env }),
      api('/agents', { env_name: env }),
      api('/messages', { env_name: env, order: 'newest', limit: 8, end_time: at }),
    ]);
    const byType = Object.entries(aggregates.status_by_type || {}).map(([type, counts]) => [
      TYPE_NAMES[type] || type,
      String(aggregates.objects_by_type[type] || 0),
      ...STATUSES.map((s) => (counts[s] ? h('span', { class: `pill ${statusClass(s)}`, text: String(counts[s]) }) : '')),
    ]);
    const links = Object.entries(aggregates.links_by_type || {}).map(([type, count]) => [type, String(count)]);
    const agentRows = agents.map((a) => [
      h('a', { href: link(['env', env, 'host', a.host]), text: a.host }),
      h('span', { class: a.state === 'connected' ? 'st-ok-text' : 'st-error-text', text: a.state }),
      a.agent_version, when(a.last_seen),
    ]);
    replace(body,
      at ? h('p', { class: 'quiet', text: 'Counts and agents are live; the tree and the views show the past.' }) : null,
      h('section', { 'aria-labelledby': 'health' }, h('h2', { id: 'health', text: 'Health' }), summary(aggregates, agents)),
      h('section', { 'aria-labelledby': 'latest' }, h('h2', { id: 'latest' }, 'Latest messages ',
        h('a', { href: link(['env', env, 'messages']), class: 'small', text: 'all' })), lastMessages(latest.messages)),
      h('section', { class: 'wide' }, table('Objects by type and status', ['Type', 'Objects', ...STATUSES], byType)),
      h('section', {}, table('Agents', ['Host', 'State', 'Version', 'Last seen'], agentRows)),
      h('section', {}, table('Links by type', ['Type', 'Links'], links)));
  };
  await draw();
  if (at) return null;
  const redraw = debounce(() => draw().catch(() => {}), 1500);
  return onChange(() => redraw());
}
