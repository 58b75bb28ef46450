// A focal point's clique drawn in layers from the focal point down to the wire, with its
// diagnosis: the members that are down, stale or unwell are marked, the first cause most.
// Its health is its worst member's. Selecting a node shows it and what depends on it; Enter or a
// double click opens it.

import { api } from '../api.js';
import { h, replace, debounce, statusDot } from '../dom.js';
import { drawGraph } from '../graph.js';
import { impact } from './object.js';

export async function render(main, { env, at, id, link, navigate, tree, onChange }) {
  const canvas = h('div', { class: 'graph-box' });
  const diagnosisBox = h('section', { class: 'diagnosis', 'aria-live': 'polite', 'aria-labelledby': 'diagnosis-title' });
  const details = h('aside', { class: 'details', 'aria-live': 'polite', 'aria-label': 'Selected object' },
    h('p', { class: 'quiet', text: 'Select a node to see it and what depends on it.' }));
  // The clique's health: its worst member's, named.
  const healthBox = h('div', { class: 'clique-health', 'aria-live': 'polite' });
  replace(main, h('h1', {}, 'Clique of ', h('a', { href: link(['env', env, 'object', id]), text: id })),
    healthBox, diagnosisBox, h('div', { class: 'graph-layout' }, canvas, details));
  const select = (node) => {
    const box = h('div', { class: 'impact' });
    replace(details, h('h2', {}, statusDot(node), ` ${node.name}`),
      h('p', { text: `${node.type}${node.host ? ` on ${node.host}` : ''}; ${node.state}; status ${node.status}${node.status_text ? `: ${node.status_text}` : ''}` }),
      h('p', {}, h('a', { href: link(['env', env, 'object', node.id]), text: 'Open' })),
      at ? null : h('button', { type: 'button', class: 'impact-button', onclick: () => impact(env, [node.id], box, link), text: 'What depends on it' }),
      box);
  };
  const draw = async () => {
    const [graph, clique] = await Promise.all([
      api('/graph', { env_name: env, focal_point: id, at }),
      api(`/cliques/${encodeURIComponent(id)}`, { env_name: env, at }),
    ]);
    const health = clique.status;
    replace(healthBox, health
      ? h('p', { id: 'clique-health' }, statusDot({ status: health.level }), ` Health: ${health.level}: ${health.text}`)
      : null);
    const drawn = drawGraph(canvas, graph, {
      focal: id, label: `Clique of ${id}: ${graph.nodes.length} objects, ${graph.links.length} links`,
      onSelect: select, onOpen: (node) => navigate(['env', env, 'object', node.id], at ? { at } : {}),
    });
    if (!at) {
      const diagnosis = await api(`/cliques/${encodeURIComponent(id)}/diagnosis`, { env_name: env });
      const findings = diagnosis.findings || [];
      drawn.mark(findings.map((f) => f.id), 'problem');
      drawn.mark(findings.slice(0, 1).map((f) => f.id), 'cause');
      replace(diagnosisBox, h('h2', { id: 'diagnosis-title', text: 'Diagnosis' }),
        h('p', { id: 'diagnosis-summary', text: diagnosis.summary }),
        findings.length ? h('ol', {}, findings.map((f) => h('li', { 'data-id': f.id },
          h('a', { href: link(['env', env, 'object', f.id]), text: f.name }),
          ` (${f.type}): ${f.problems.join(', ')}${f.since ? ` since ${new Date(f.since).toLocaleString()}` : ''}`))) : null);
    } else {
      replace(diagnosisBox, h('h2', { id: 'diagnosis-title', text: 'Diagnosis' }), h('p', { class: 'quiet', text: 'A diagnosis is of the present: back to live to see one.' }));
    }
    tree?.mark(id);
  };
  await draw();
  if (at) return null;
  const redraw = debounce(() => draw().catch(() => {}), 700);
  return onChange((event) => {
    if (event.kind === 'clique' && event.key === id) redraw();
    else if (event.kind === 'object' && canvas.querySelector(`[data-id="${CSS.escape(event.key)}"]`)) redraw();
  });
}
