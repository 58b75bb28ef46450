// Building the page without markup strings: everything the API returns is inserted as text,
// so a name an agent reported can never become markup (the page's CSP forbids inline script
// besides).

/** An HTML element: `attrs` sets attributes, `on*` functions become listeners, `text` the
 *  text; children may be nodes, strings, arrays, or null/false (skipped). */
export function h(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element, as `h`. */
export function svg(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

function fill(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), value);
    } else if (key === 'text') {
      element.textContent = String(value);
    } else {
      element.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** Removes every child of `element`, then appends `children`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A local, readable form of an RFC 3339 time. */
export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** The CSS class of a status level. */
export function statusClass(status) {
  return `st-${['ok', 'warning', 'error'].includes(status) ? status : 'unknown'}`;
}

/** A coloured dot with the status (and state) spelled out for screen readers. */
export function statusDot(object) {
  const words = [object.status || 'unknown'];
  if (object.state === 'down') words.push('down');
  if (object.stale) words.push('stale');
  return h('span', {
    class: `dot ${statusClass(object.status)}${object.state === 'down' ? ' down' : ''}${object.stale ? ' stale' : ''}`,
    role: 'img',
    'aria-label': words.join(', '),
    title: words.join(', '),
  });
}

/** A table with a caption, column headings and rows of cells. */
export function table(caption, headings, rows) {
  return h('table', {},
    h('caption', { text: caption }),
    h('thead', {}, h('tr', {}, headings.map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c))))));
}

/** Waits `ms` after the last call before running `fn`. */
export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
