// Draws a clique or host graph as SVG: one element per object and per link, each a real DOM
// node with its id, type, status and state as data attributes and a label for screen readers,
// so the graph can be read by keyboard and checked by a test like any other part of the page.

import { svg, h, statusClass } from './dom.js';
import { layered, SPACING_X, SPACING_Y } from './layout.js';

/** The shape of each type: `[kind, width, height]`. */
const SHAPES = {
  instance: ['rect', 124, 38], vservice: ['rect', 124, 38], container: ['rect', 124, 38], pod: ['rect', 124, 38],
  vnic: ['circle', 34, 34], vconnector: ['diamond', 46, 46], vedge: ['hexagon', 58, 44],
  otep: ['triangle', 46, 40], host_pnic: ['square', 34, 34], network: ['ellipse', 132, 40],
  switch_pnic: ['square', 26, 26], switch: ['rect', 110, 34], host: ['house', 50, 42],
};

function shape(type) {
  const [kind, w, h2] = SHAPES[type] || ['circle', 30, 30];
  const [x, y] = [w / 2, h2 / 2];
  switch (kind) {
    case 'rect': return svg('rect', { x: -x, y: -y, width: w, height: h2, rx: 8 });
    case 'square': return svg('rect', { x: -x, y: -y, width: w, height: h2 });
    case 'ellipse': return svg('ellipse', { rx: x, ry: y });
    case 'diamond': return svg('polygon', { points: `0,${-y} ${x},0 0,${y} ${-x},0` });
    case 'hexagon': return svg('polygon', { points: `${-x / 2},${-y} ${x / 2},${-y} ${x},0 ${x / 2},${y} ${-x / 2},${y} ${-x},0` });
    case 'triangle': return svg('polygon', { points: `0,${-y} ${x},${y} ${-x},${y}` });
    case 'house': return svg('polygon', { points: `0,${-y} ${x},${-y / 3} ${x},${y} ${-x},${y} ${-x},${-y / 3}` });
    default: return svg('circle', { r: x });
  }
}

function shorten(text, max = 22) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** What a screen reader says of a node. */
function describe(node) {
  const parts = [`${node.type.replace('_', ' ')} ${node.name}`, `status ${node.status}`];
  if (node.state === 'down') parts.push('down');
  if (node.stale) parts.push('stale: its agent is away');
  if (node.host) parts.push(`on ${node.host}`);
  return parts.join(', ');
}

/**
 * Draws `graph` ({nodes, links}) into `container` and returns a controller:
 * `mark(ids, className)` adds a class to those nodes (and the links between them),
 * `select(id)`, `fit()`. `onSelect(node)` runs on click or Space, `onOpen(node)` on double
 * click or Enter.
 */
export function drawGraph(container, graph, { focal, onSelect = () => {}, onOpen = () => {}, label = 'Graph' } = {}) {
  const { positions, layers, width, height } = layered(graph.nodes, graph.links, focal);
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const pad = SPACING_X;
  const full = { x: -width / 2 - pad / 2, y: -SPACING_Y / 2, w: width + pad, h: height };
  let view = { ...full };
  const root = svg('svg', {
    class: 'graph', role: 'group', 'aria-label': label, 'data-nodes': graph.nodes.length,
    'data-links': graph.links.length, preserveAspectRatio: 'xMidYMid meet',
  });
  const setView = () => root.setAttribute('viewBox', `${view.x} ${view.y} ${view.w} ${view.h}`);
  setView();
  const edges = svg('g', { class: 'links' });
  const vertices = svg('g', { class: 'nodes' });
  root.append(edges, vertices);
  const linkElements = [];
  for (const link of graph.links) {
    const [a, b] = [positions.get(link.source), positions.get(link.target)];
    if (!a || !b) continue;
    const midY = (a.y + b.y) / 2;
    const path = svg('path', {
      d: `M${a.x},${a.y} C${a.x},${midY} ${b.x},${midY} ${b.x},${b.y}`,
      class: `link ${link.state === 'down' ? 'down' : link.state === 'unknown' ? 'unknown' : 'up'}`,
      'data-type': link.link_type, 'data-source': link.source, 'data-target': link.target,
      'data-state': link.state,
    }, svg('title', { text: `${link.link_type} ${link.state}: ${link.source} → ${link.target}` }));
    linkElements.push(path);
    edges.append(path);
  }
  const nodeElements = new Map();
  for (const node of graph.nodes) {
    const at = positions.get(node.id);
    const g = svg('g', {
      class: `node ${statusClass(node.status)}${node.state === 'down' ? ' down' : ''}${node.stale ? ' stale' : ''}${node.id === focal ? ' focal' : ''}`,
      transform: `translate(${at.x},${at.y})`, tabindex: '-1', role: 'button',
      'aria-label': describe(node), 'data-id': node.id, 'data-type': node.type,
      'data-status': node.status, 'data-state': node.state, 'data-layer': at.layer,
    }, svg('title', { text: describe(node) }), shape(node.type),
    svg('text', { class: 'name', y: 4, 'text-anchor': 'middle', text: shorten(node.name) }),
    svg('text', { class: 'kind', y: (SHAPES[node.type]?.[2] ?? 30) / 2 + 14, 'text-anchor': 'middle', text: node.type }));
    g.addEventListener('click', (event) => { event.stopPropagation(); select(node.id); onSelect(node); });
    g.addEventListener('dblclick', () => onOpen(node));
    g.addEventListener('keydown', (event) => keydown(event, node));
    nodeElements.set(node.id, g);
    vertices.append(g);
  }
  // One node takes focus from the keyboard (roving tabindex): the focal point, else the first.
  const first = nodeElements.get(focal) || nodeElements.values().next().value;
  if (first) first.setAttribute('tabindex', '0');

  let selected = null;
  function select(id) {
    if (selected) nodeElements.get(selected)?.classList.remove('selected');
    selected = id;
    const element = nodeElements.get(id);
    if (!element) return;
    element.classList.add('selected');
    for (const other of nodeElements.values()) other.setAttribute('tabindex', '-1');
    element.setAttribute('tabindex', '0');
  }
  function focus(id) {
    const element = nodeElements.get(id);
    if (!element) return;
    for (const other of nodeElements.values()) other.setAttribute('tabindex', '-1');
    element.setAttribute('tabindex', '0');
    element.focus();
  }
  function keydown(event, node) {
    const at = positions.get(node.id);
    const row = layers[at.layer];
    const index = row.indexOf(node.id);
    const nearestIn = (layerIndex) => {
      const candidates = layers[layerIndex];
      if (!candidates) return null;
      return candidates.reduce((best, id) => (Math.abs(positions.get(id).x - at.x) < Math.abs(positions.get(best).x - at.x) ? id : best), candidates[0]);
    };
    const moves = {
      ArrowLeft: () => row[index - 1], ArrowRight: () => row[index + 1],
      ArrowUp: () => nearestIn(at.layer - 1), ArrowDown: () => nearestIn(at.layer + 1),
    };
    if (moves[event.key]) {
      event.preventDefault();
      const next = moves[event.key]();
      if (next) focus(next);
    } else if (event.key === 'Enter') {
      event.preventDefault();
      onOpen(node);
    } else if (event.key === ' ') {
      event.preventDefault();
      select(node.id);
      onSelect(node);
    }
  }

  // Pan by dragging the background, zoom with the wheel or the buttons.
  let drag = null;
  root.addEventListener('pointerdown', (event) => {
    if (event.target.closest('.node')) return;
    drag = { x: event.clientX, y: event.clientY, view: { ...view } };
    root.setPointerCapture(event.pointerId);
  });
  root.addEventListener('pointermove', (event) => {
    if (!drag) return;
    const scale = view.w / (root.clientWidth || 1);
    view.x = drag.view.x - (event.clientX - drag.x) * scale;
    view.y = drag.view.y - (event.clientY - drag.y) * scale;
    setView();
  });
  root.addEventListener('pointerup', () => { drag = null; });
  const zoom = (factor) => {
    const cx = view.x + view.w / 2;
    const cy = view.y + view.h / 2;
    view.w *= factor;
    view.h *= factor;
    view.x = cx - view.w / 2;
    view.y = cy - view.h / 2;
    setView();
  };
  root.addEventListener('wheel', (event) => { event.preventDefault(); zoom(event.deltaY > 0 ? 1.15 : 1 / 1.15); }, { passive: false });
  const fit = () => { view = { ...full }; setView(); };
  const toolbar = h('div', { class: 'graph-tools', role: 'toolbar', 'aria-label': 'Zoom' },
    h('button', { type: 'button', onclick: () => zoom(1 / 1.3), 'aria-label': 'Zoom in', text: '+' }),
    h('button', { type: 'button', onclick: () => zoom(1.3), 'aria-label': 'Zoom out', text: '−' }),
    h('button', { type: 'button', onclick: fit, text: 'Fit' }));
  container.replaceChildren(toolbar, root);

  return {
    svg: root,
    select,
    fit,
    /** Adds `className` to the nodes `ids` and the links among them, removing it elsewhere. */
    mark(ids, className) {
      const set = new Set(ids);
      for (const [id, element] of nodeElements) element.classList.toggle(className, set.has(id));
      for (const path of linkElements) {
        path.classList.toggle(className, set.has(path.dataset.source) && set.has(path.dataset.target));
      }
    },
    node: (id) => byId.get(id),
  };
}
