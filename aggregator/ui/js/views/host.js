// Every object of one host and every link with an end on it (with the far ends: remote tunnel
// endpoints, networks), as a layered graph.

import { api } from '../api.js';
import { h, replace, debounce } from '../dom.js';
import { drawGraph } from '../graph.js';
import { impact } from './object.js';

export async function render(main, { env, at, id: host, link, navigate, onChange }) {
  const canvas = h('div', { class: 'graph-box tall' });
  const details = h('aside', { class: 'details', 'aria-live': 'polite', 'aria-label': 'Selected object' });
  const heading = h('h1', { text: `Host ${host}` });
  replace(main, heading, h('div', { class: 'graph-layout' }, canvas, details));
  const draw = async () => {
    const graph = await api('/graph', { env_name: env, host, at });
    heading.textContent = `Host ${host}: ${graph.nodes.length} objects, ${graph.links.length} links`;
    drawGraph(canvas, graph, {
      label: `Objects and links of ${host}`,
      onOpen: (node) => navigate(['env', env, 'object', node.id], at ? { at } : {}),
      onSelect: (node) => {
        const box = h('div', { class: 'impact' });
        replace(details, h('h2', { text: node.name }), h('p', { text: `${node.type}; ${node.state}; status ${node.status}` }),
          h('p', {}, h('a', { href: link(['env', env, 'object', node.id]), text: 'Open' })),
          at ? null : h('button', { type: 'button', onclick: () => impact(env, [node.id], box, link), text: 'What depends on it' }), box);
      },
    });
  };
  await draw();
  if (at) return null;
  const redraw = debounce(() => draw().catch(() => {}), 1000);
  return onChange((event) => { if (event.host === host) redraw(); });
}
