// The environment tree, as the original's: regions → zones → hosts → what each host holds →
// an instance's vNICs. Levels load when opened (`/tree`), each row knowing how many children
// it has; a level holding several types is grouped in folders by type. A WAI-ARIA tree:
// arrow keys move, Right/Left open and close, Enter opens the object, Home/End jump.

import { api } from './api.js';
import { h, statusDot } from './dom.js';

export const TYPE_NAMES = {
  environment: 'Environments', region: 'Regions', availability_zone: 'Availability zones',
  project: 'Projects', host: 'Hosts', instance: 'Instances', vnic: 'vNICs', vconnector: 'Bridges',
  vedge: 'vSwitches', otep: 'Tunnel endpoints', host_pnic: 'Physical NICs', switch: 'Switches',
  switch_pnic: 'Switch ports', network: 'Networks', port: 'Ports', vservice: 'Services',
  network_agent: 'Network agents', container: 'Containers', pod: 'Pods',
};

export class Tree {
  /** `href(row)` gives a row's link; `at` reads the tree as it was then. */
  constructor(container, { environment, at, href }) {
    this.environment = environment;
    this.at = at;
    this.href = href;
    this.items = new Map();
    this.root = h('ul', { role: 'tree', class: 'tree', 'aria-label': `Objects of ${environment}` });
    this.root.addEventListener('keydown', (event) => this.keydown(event));
    container.replaceChildren(this.root);
  }

  async load() {
    await this.fill(this.root, null, 1);
    this.visible()[0]?.setAttribute('tabindex', '0');
  }

  async level(parent) {
    return api('/tree', { env_name: this.environment, parent_id: parent, at: this.at });
  }

  /** Puts the level under `parent` into `group` (a `ul`), in folders when it holds several
   *  types. */
  async fill(group, parent, depth) {
    const level = await this.level(parent);
    const types = [...new Set(level.rows.map((r) => r.type))];
    const items = [];
    if (types.length > 1) {
      for (const type of types) {
        const rows = level.rows.filter((r) => r.type === type);
        items.push(this.folder(type, rows, depth, parent));
      }
    } else {
      items.push(...level.rows.map((row) => this.item(row, depth)));
    }
    if (level.left_out) {
      items.push(h('li', { role: 'none', class: 'left-out', text: `${level.left_out} more: search to find them` }));
    }
    group.replaceChildren(...items);
    group.dataset.loaded = 'true';
  }

  folder(type, rows, depth, parent) {
    const group = h('ul', { role: 'group', hidden: true });
    group.append(...rows.map((row) => this.item(row, depth + 1)));
    const label = `${TYPE_NAMES[type] || type} (${rows.length})`;
    const li = h('li', {
      role: 'treeitem', 'aria-expanded': 'false', 'aria-level': depth, tabindex: '-1',
      'data-folder': type, 'data-parent': parent || '', 'aria-label': label,
    }, h('div', { class: 'row' }, h('span', { class: 'twisty', 'aria-hidden': 'true' }),
      h('span', { class: 'folder-name', text: label })), group);
    li.querySelector('.row').addEventListener('click', () => this.toggle(li));
    return li;
  }

  item(row, depth) {
    const li = h('li', {
      role: 'treeitem', 'aria-level': depth, tabindex: '-1', 'data-id': row.id, 'data-type': row.type,
      'aria-expanded': row.children ? 'false' : null,
    });
    this.render(li, row);
    this.items.set(row.id, li);
    return li;
  }

  /** (Re)draws the row of `li` from `row`, keeping its loaded children. */
  render(li, row) {
    const group = li.querySelector(':scope > ul');
    li.setAttribute('aria-label', `${row.name}, ${row.type.replace('_', ' ')}, ${row.status}${row.state === 'down' ? ', down' : ''}${row.stale ? ', stale' : ''}`);
    const link = h('a', { href: this.href(row), tabindex: '-1', text: row.name });
    const line = h('div', { class: 'row' },
      h('span', { class: 'twisty', 'aria-hidden': 'true' }), statusDot(row), link,
      h('span', { class: 'meta', 'aria-hidden': 'true', text: row.children ? `${row.type} · ${row.children}` : row.type }));
    line.querySelector('.twisty').addEventListener('click', (event) => { event.preventDefault(); this.toggle(li); });
    li.replaceChildren(line);
    if (group) li.append(group);
    li.dataset.row = JSON.stringify(row);
  }

  async toggle(li) {
    if (!li.hasAttribute('aria-expanded')) return;
    if (li.getAttribute('aria-expanded') === 'true') this.collapse(li);
    else await this.expand(li);
  }

  collapse(li) {
    li.setAttribute('aria-expanded', 'false');
    const group = li.querySelector(':scope > ul');
    if (group) group.hidden = true;
  }

  async expand(li) {
    if (!li.hasAttribute('aria-expanded')) return;
    let group = li.querySelector(':scope > ul');
    if (!group) {
      group = h('ul', { role: 'group', hidden: true });
      li.append(group);
    }
    if (li.dataset.id && !group.dataset.loaded) {
      li.setAttribute('aria-busy', 'true');
      try {
        await this.fill(group, li.dataset.id, Number(li.getAttribute('aria-level')) + 1);
      } finally {
        li.removeAttribute('aria-busy');
      }
    }
    group.hidden = false;
    li.setAttribute('aria-expanded', 'true');
  }

  /** Opens the tree along `ancestors` (ids from the top) and focuses `id`. */
  async reveal(ancestors, id) {
    for (const ancestor of ancestors) {
      const li = this.items.get(ancestor);
      if (!li) continue;
      await this.show(li);
      await this.expand(li);
    }
    const target = this.items.get(id);
    if (target) {
      await this.show(target);
      this.focus(target);
      this.mark(id);
    }
  }

  /** Opens the type folder `li` sits in, if any. */
  async show(li) {
    const folder = li.parentElement?.closest('[data-folder]');
    if (folder && folder.getAttribute('aria-expanded') !== 'true') await this.expand(folder);
  }

  /** Shows `id` as the current object. */
  mark(id) {
    for (const li of this.root.querySelectorAll('[aria-selected="true"]')) li.removeAttribute('aria-selected');
    this.items.get(id)?.setAttribute('aria-selected', 'true');
  }

  visible() {
    return [...this.root.querySelectorAll('[role="treeitem"]')].filter((li) => !li.parentElement.closest('ul[hidden]'));
  }

  focus(li) {
    for (const other of this.root.querySelectorAll('[tabindex="0"]')) other.setAttribute('tabindex', '-1');
    li.setAttribute('tabindex', '0');
    li.focus();
  }

  async keydown(event) {
    const li = event.target.closest('[role="treeitem"]');
    if (!li) return;
    const items = this.visible();
    const index = items.indexOf(li);
    const parentItem = li.parentElement.closest('[role="treeitem"]');
    switch (event.key) {
      case 'ArrowDown': if (items[index + 1]) this.focus(items[index + 1]); break;
      case 'ArrowUp': if (items[index - 1]) this.focus(items[index - 1]); break;
      case 'Home': this.focus(items[0]); break;
      case 'End': this.focus(items[items.length - 1]); break;
      case 'ArrowRight':
        if (li.getAttribute('aria-expanded') === 'false') await this.expand(li);
        else if (li.getAttribute('aria-expanded') === 'true') {
          const child = li.querySelector(':scope > ul > [role="treeitem"]');
          if (child) this.focus(child);
        }
        break;
      case 'ArrowLeft':
        if (li.getAttribute('aria-expanded') === 'true') this.collapse(li);
        else if (parentItem) this.focus(parentItem);
        break;
      case 'Enter': {
        const link = li.querySelector(':scope > .row > a');
        if (link) link.click();
        else await this.toggle(li);
        break;
      }
      default: return;
    }
    event.preventDefault();
  }

  /** A live change: an object added, changed or gone where its level is open. */
  apply(event) {
    if (event.kind !== 'object') return;
    const existing = this.items.get(event.key);
    if (event.action === 'remove') {
      if (existing) {
        const folder = existing.parentElement?.closest('[data-folder]');
        existing.remove();
        this.items.delete(event.key);
        if (folder) this.recount(folder);
      }
      return;
    }
    const object = event.data;
    const previous = existing ? JSON.parse(existing.dataset.row || '{}') : null;
    const row = {
      id: object.id, type: object.type, name: object.name, host: object.host,
      state: object.attributes?.link_state === 'down' ? 'down' : 'up', stale: false,
      status: object.status?.level || 'unknown', status_text: object.status?.text || '',
      children: previous?.children || 0,
    };
    if (existing) {
      this.render(existing, row);
      return;
    }
    const parentId = object.parent?.id;
    const parentLi = parentId ? this.items.get(parentId) : null;
    const group = parentLi ? parentLi.querySelector(':scope > ul') : (parentId ? null : this.root);
    if (parentLi && !group) {
      // The parent's level is not open: only its count changes.
      const parentRow = JSON.parse(parentLi.dataset.row || '{}');
      parentRow.children = (parentRow.children || 0) + 1;
      if (!parentLi.hasAttribute('aria-expanded')) parentLi.setAttribute('aria-expanded', 'false');
      this.render(parentLi, parentRow);
      return;
    }
    if (!group || !group.dataset.loaded && group !== this.root) return;
    const depth = parentLi ? Number(parentLi.getAttribute('aria-level')) + 1 : 1;
    let folder = group.querySelector(`:scope > [data-folder="${CSS.escape(row.type)}"]`);
    const hasFolders = group.querySelector(':scope > [data-folder]');
    if (!folder && hasFolders) {
      folder = this.folder(row.type, [], depth, parentId);
      group.append(folder);
    }
    const target = folder ? folder.querySelector(':scope > ul') : group;
    const li = this.item(row, folder ? depth + 1 : depth);
    const after = [...target.children].find((other) => (other.dataset.row ? JSON.parse(other.dataset.row).name > row.name : false));
    target.insertBefore(li, after || null);
    if (folder) this.recount(folder);
  }

  recount(folder) {
    const count = folder.querySelectorAll(':scope > ul > [role="treeitem"]').length;
    const label = `${TYPE_NAMES[folder.dataset.folder] || folder.dataset.folder} (${count})`;
    folder.setAttribute('aria-label', label);
    folder.querySelector('.folder-name').textContent = label;
  }
}
