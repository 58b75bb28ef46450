// The live stream of one environment: one connection for the whole page, resumed after a
// drop from the last event it saw, fanned out to whatever view is showing. Paused while the
// user looks at the past.

import { readEvents } from './api.js';

const listeners = new Set();
let current = null;
let stateText = 'paused';

/** What the stream is doing: `live`, `connecting`, `reconnecting`, `paused` or `stopped`. */
export function liveState() {
  return stateText;
}

/** Calls `fn(event)` for each change (`{kind, action, key, item_type, host, data}`) and with
 *  `{kind: 'reset'}` when changes were lost (re-read everything). Returns the unsubscriber. */
export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(event) {
  for (const fn of [...listeners]) {
    try { fn(event); } catch (error) { console.error('live listener', error); }
  }
}

function setState(text) {
  stateText = text;
  const badge = document.getElementById('live-state');
  if (badge) {
    badge.textContent = text;
    badge.dataset.state = text.split(' ')[0];
  }
}

/** Follows `environment` (stopping what was followed before); `null` stops. */
export function follow(environment) {
  if (current?.environment === environment) return;
  current?.controller.abort();
  current = null;
  if (!environment) {
    setState('paused');
    return;
  }
  const state = { environment, controller: new AbortController(), lastId: null };
  current = state;
  run(state);
}

async function run(state) {
  let delay = 1000;
  while (!state.controller.signal.aborted) {
    setState('connecting');
    try {
      await readEvents('/events', { env_name: state.environment, since: state.lastId }, (type, data, id) => {
        if (id) state.lastId = id;
        if (type === 'reset') { emit({ kind: 'reset', reason: data }); return; }
        if (type !== 'change') return;
        try { emit(JSON.parse(data)); } catch (error) { console.error('bad event', error); }
      }, state.controller.signal, () => { setState('live'); delay = 1000; });
    } catch (error) {
      if (state.controller.signal.aborted) return;
      if (error.status === 401 || error.status === 403) { setState('stopped'); return; }
    }
    if (state.controller.signal.aborted) return;
    setState('reconnecting');
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}
