// The layered layout of a clique or host graph: from the focal point down to the wire, in the
// order an operator reads a VM's dependencies (instance → vNIC → bridge → vswitch → tunnel
// endpoint → NIC → network → switch port). Written here rather than taken from a graph
// library: the layers come from the model's types, which a generic layout does not know.

/** Where each type sits, top to bottom; types not listed come last. vNICs and bridges share
 *  a rank: which comes first depends on the plugging (tap → qbr → qvb → qvo → br-int), so
 *  between them the distance from the focal point decides. */
const TYPE_ORDER = ['instance', 'vservice', 'container', 'pod', ['vnic', 'vconnector'], 'vedge',
  'otep', 'host_pnic', 'network', 'switch_pnic', 'switch'];
/** The types drawn below everything else, each on its own layer: the wire. */
const WIRE = ['network', 'switch_pnic', 'switch'];
const CONSUMERS = ['instance', 'vservice', 'container', 'pod'];

export const SPACING_X = 170;
export const SPACING_Y = 120;

function rankOf(type) {
  if (CONSUMERS.includes(type)) return 0;
  const index = TYPE_ORDER.findIndex((t) => t === type || (Array.isArray(t) && t.includes(type)));
  return index < 0 ? TYPE_ORDER.length : index - CONSUMERS.length + 1;
}

/** Hops from the focal point (or from the consumers, when there is none), over any link. */
function distances(nodes, adjacency, focal) {
  const distance = new Map();
  const queue = [];
  const starts = focal && adjacency.has(focal)
    ? [focal]
    : nodes.filter((n) => CONSUMERS.includes(n.type)).map((n) => n.id);
  for (const id of starts.length ? starts : nodes.slice(0, 1).map((n) => n.id)) {
    distance.set(id, 0);
    queue.push(id);
  }
  for (let i = 0; i < queue.length; i += 1) {
    const id = queue[i];
    for (const next of adjacency.get(id) || []) {
      if (!distance.has(next)) {
        distance.set(next, distance.get(id) + 1);
        queue.push(next);
      }
    }
  }
  return distance;
}

/**
 * Positions for `nodes` ({id, type}) joined by `links` ({source, target}): `{positions: Map(id →
 * {x, y, layer}), layers: [[id]], width, height}`.
 *
 * Each link points from the end of the lower type rank to the higher (equal ranks: from the
 * nearer to the focal point, then by id), a strict order, so the links form no cycle; a node's
 * layer is the longest chain above it, and the wire types go below all of that. Within a
 * layer, nodes are ordered by the mean position of their neighbours, sweeping down and up.
 */
export function layered(nodes, links, focal) {
  const adjacency = new Map(nodes.map((n) => [n.id, []]));
  const usable = links.filter((l) => adjacency.has(l.source) && adjacency.has(l.target) && l.source !== l.target);
  for (const link of usable) {
    adjacency.get(link.source).push(link.target);
    adjacency.get(link.target).push(link.source);
  }
  const distance = distances(nodes, adjacency, focal);
  const type = new Map(nodes.map((n) => [n.id, n.type]));
  const key = (id) => [rankOf(type.get(id)), distance.get(id) ?? Infinity, id];
  const before = (a, b) => {
    const [ka, kb] = [key(a), key(b)];
    for (let i = 0; i < 3; i += 1) {
      if (ka[i] < kb[i]) return true;
      if (ka[i] > kb[i]) return false;
    }
    return false;
  };
  const successors = new Map(nodes.map((n) => [n.id, []]));
  const indegree = new Map(nodes.map((n) => [n.id, 0]));
  for (const { source, target } of usable) {
    const [from, to] = before(source, target) ? [source, target] : [target, source];
    successors.get(from).push(to);
    indegree.set(to, indegree.get(to) + 1);
  }
  // Longest path from the sources, in topological order (Kahn).
  const layer = new Map(nodes.map((n) => [n.id, 0]));
  const ready = nodes.filter((n) => indegree.get(n.id) === 0).map((n) => n.id);
  const topological = [];
  while (ready.length) {
    const id = ready.pop();
    topological.push(id);
    for (const next of successors.get(id)) {
      layer.set(next, Math.max(layer.get(next), layer.get(id) + 1));
      indegree.set(next, indegree.get(next) - 1);
      if (indegree.get(next) === 0) ready.push(next);
    }
  }
  // A node nothing points at (the far end of a veth pair, say) is pulled down next to what it
  // leads to, rather than left at the top beside the focal point.
  for (const id of topological.reverse()) {
    const below = successors.get(id).map((next) => layer.get(next));
    if (below.length && rankOf(type.get(id)) > 0 && id !== focal) {
      layer.set(id, Math.max(layer.get(id), Math.min(...below) - 1));
    }
  }
  const above = nodes.filter((n) => !WIRE.includes(n.type)).map((n) => layer.get(n.id));
  const wireTop = above.length ? Math.max(...above) + 1 : 0;
  const wireTypes = WIRE.filter((t) => nodes.some((n) => n.type === t));
  for (const node of nodes) {
    const wire = wireTypes.indexOf(node.type);
    if (wire >= 0) layer.set(node.id, wireTop + wire);
  }
  // Layers, compacted (no empty ones), first ordered by key.
  const used = [...new Set(layer.values())].sort((a, b) => a - b);
  const layers = used.map(() => []);
  for (const node of [...nodes].sort((a, b) => (before(a.id, b.id) ? -1 : before(b.id, a.id) ? 1 : 0))) {
    layers[used.indexOf(layer.get(node.id))].push(node.id);
  }
  const order = new Map();
  const renumber = (row) => row.forEach((id, i) => order.set(id, i - (row.length - 1) / 2));
  layers.forEach(renumber);
  const layerIndex = new Map();
  layers.forEach((row, i) => row.forEach((id) => layerIndex.set(id, i)));
  const sweep = (row, i, fromAbove) => {
    const mean = new Map();
    for (const id of row) {
      const near = adjacency.get(id).filter((n) => (fromAbove ? layerIndex.get(n) < i : layerIndex.get(n) > i));
      if (near.length) mean.set(id, near.reduce((sum, n) => sum + order.get(n), 0) / near.length);
    }
    row.sort((a, b) => (mean.get(a) ?? order.get(a)) - (mean.get(b) ?? order.get(b)));
    renumber(row);
  };
  for (let pass = 0; pass < 4; pass += 1) {
    layers.forEach((row, i) => { if (i > 0) sweep(row, i, true); });
    for (let i = layers.length - 2; i >= 0; i -= 1) sweep(layers[i], i, false);
  }
  const positions = new Map();
  layers.forEach((row, i) => row.forEach((id) => {
    positions.set(id, { x: order.get(id) * SPACING_X, y: i * SPACING_Y, layer: i });
  }));
  const widest = Math.max(1, ...layers.map((row) => row.length));
  return { positions, layers, width: widest * SPACING_X, height: Math.max(1, layers.length) * SPACING_Y };
}
