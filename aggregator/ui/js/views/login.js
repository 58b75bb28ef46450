// Log in with a user name and password (local accounts, or LDAP where configured): the API
// gives a token, kept for this tab only.

import { api, session } from '../api.js';
import { h, replace } from '../dom.js';

export async function render(main, { navigate }) {
  const username = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true });
  const password = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { id: 'login-error', class: 'error', role: 'alert' });
  const button = h('button', { type: 'submit', id: 'login-button', text: 'Log in' });
  const form = h('form', { class: 'login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title', text: 'Log in to Calipso' }),
    h('label', { for: 'username', text: 'User name' }), username,
    h('label', { for: 'password', text: 'Password' }), password,
    button, error);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    button.disabled = true;
    try {
      const issued = await api('/auth/tokens', {}, { method: 'POST', body: { username: username.value, password: password.value } });
      session.start(issued.token, { username: issued.username, grants: issued.grants, expires_at: issued.expires_at });
      navigate([]);
    } catch (failure) {
      error.textContent = failure.message;
      password.value = '';
      password.focus();
    } finally {
      button.disabled = false;
    }
  });
  replace(main, form);
  username.focus();
}
