// Every environment the user may see, with its health: objects by status, links by state,
// agents connected and away, and its latest messages.

import { api } from '../api.js';
import { h, replace, statusClass, when } from '../dom.js';

export async function render(main, { link }) {
  const environments = await api('/environment_configs');
  replace(main, h('h1', { text: 'Environments' }),
    environments.length ? null : h('p', { text: 'No environment yet: start an agent, or create one in the API.' }));
  const grid = h('div', { class: 'cards' });
  main.append(grid);
  await Promise.all(environments.map(async (env) => {
    const card = h('section', { class: 'card', 'aria-labelledby': `env-${env.name}`, 'data-environment': env.name },
      h('h2', { id: `env-${env.name}` }, h('a', { href: link(['env', env.name]), text: env.name })));
    grid.append(card);
    try {
      const [aggregates, agents, latest] = await Promise.all([
        api('/aggregates', { env_name: env.name }),
        api('/agents', { env_name: env.name }),
        api('/messages', { env_name: env.name, order: 'newest', limit: 3 }),
      ]);
      card.append(summary(aggregates, agents), lastMessages(latest.messages));
    } catch (error) {
      card.append(h('p', { class: 'error', text: error.message }));
    }
  }));
}

/** Counts as a short list, each status in its colour. */
export function summary(aggregates, agents) {
  const connected = agents.filter((a) => a.state === 'connected').length;
  const statuses = Object.entries(aggregates.objects_by_status || {});
  return h('dl', { class: 'summary' },
    h('dt', { text: 'Objects' }), h('dd', {}, `${aggregates.objects} `,
      statuses.map(([status, count]) => h('span', { class: `pill ${statusClass(status)}`, text: `${count} ${status}` }))),
    h('dt', { text: 'Down' }), h('dd', { text: `${aggregates.objects_by_state?.down || 0} objects, ${aggregates.links_by_state?.down || 0} links` }),
    h('dt', { text: 'Links' }), h('dd', { text: String(aggregates.links) }),
    h('dt', { text: 'Cliques' }), h('dd', { text: String(aggregates.cliques) }),
    h('dt', { text: 'Agents' }), h('dd', { text: `${connected} connected, ${agents.length - connected} away` }),
    h('dt', { text: 'Stale objects' }), h('dd', { text: String(aggregates.stale_objects) }));
}

export function lastMessages(messages) {
  if (!messages.length) return h('p', { class: 'quiet', text: 'No messages.' });
  return h('ul', { class: 'messages-short', 'aria-label': 'Latest messages' },
    messages.map((m) => h('li', { class: `level-${m.level}` },
      h('time', { datetime: m.at, text: when(m.at) }), ` ${m.level}: ${m.text}`)));
}
