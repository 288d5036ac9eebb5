// What the chat demo's browser tests share: the tokens they run the demo
// with, a markup payload that must stay text, and starting a chat node.
import {freePort, httpReady, start} from './helpers.mjs';

export const API_TOKEN = 'e2e-api-token';
export const SVC_TOKEN = 'e2e-topicsvc-token';
export const XSS = '<img src=x onerror="window.__pwned=(window.__pwned||0)+1">';

// startChat runs one chat node of the binary bin; broker is a
// FIRETOWER_BROKER URL or '' for the embedded topic service, presenceGrace
// a FIRETOWER_PRESENCE_GRACE duration ('5s') or '' for the default.
export async function startChat(bin, {port, broker = '', presenceGrace = ''} = {}) {
  port ??= await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = {
    FIRETOWER_ADDR: `127.0.0.1:${port}`,
    FIRETOWER_API_TOKEN: API_TOKEN,
    FIRETOWER_BROKER: broker,
    FIRETOWER_TOPICSVC_TOKEN: broker ? SVC_TOKEN : '',
    FIRETOWER_PRESENCE_GRACE: presenceGrace,
  };
  const proc = await start(bin, env, httpReady(base + '/'), `chat node ${base}`);
  return {proc, port, base};
}

// signIn makes the chat pages of the browser context ctx sign in as user,
// shown as name: the identity the page's form keeps in localStorage is
// there before a page of the context first loads. A change made with the
// form afterwards stays.
export async function signIn(ctx, user, name = user) {
  await ctx.addInitScript(([u, n]) => {
    try {
      if (localStorage.getItem('firetower.user') === null) {
        localStorage.setItem('firetower.user', u);
        localStorage.setItem('firetower.nick', n);
      }
    } catch (e) { /* a document without storage (about:blank) */ }
  }, [user, name]);
}
