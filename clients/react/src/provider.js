// <PulseProvider>: one PulseClient shared by every hook below it.
//
// - `client`: a client the application created (typically once, at module
//   level, like supabase-js's createClient). The provider never closes it.
// - `url` (+ `options`): the provider creates the client itself, in an
//   effect, and closes it on unmount or when `url` changes. Created in an
//   effect, not during render, so a render React throws away (StrictMode,
//   Suspense) never opens a connection; StrictMode's extra mount closes its
//   client before it connected. Until the effect ran (first render, server
//   rendering) there is no client: hooks return their initial values.
//   `options` are read when the client is created, except `token` (a new
//   one is sent with setToken) and `getToken` (the latest one is called).

import { PulseClient } from '@pulsehub/client';
import { createContext, createElement, useContext, useEffect, useMemo, useRef, useState } from 'react';

/** @typedef {import('@pulsehub/client').PulseClientOptions} PulseClientOptions */

/**
 * @typedef {object} PulseContextValue
 * @property {PulseClient | null} client
 * @property {boolean} provided
 */

/** @type {import('react').Context<PulseContextValue>} */
export const PulseContext = createContext(/** @type {PulseContextValue} */ ({ client: null, provided: false }));
PulseContext.displayName = 'PulseContext';

/**
 * @typedef {object} PulseProviderProps
 * @property {import('@pulsehub/client').PulseClient} [client] a client you created and close yourself
 * @property {string} [url] the hub's WebSocket URL (e.g. "wss://hub.example.com/ws", or "/ws" on the page's
 *   origin): the provider creates the client and closes it on unmount
 * @property {ConstructorParameters<typeof import('@pulsehub/client').PulseClient>[1]} [options] options of the client the provider creates
 * @property {import('react').ReactNode} [children]
 */

/**
 * @param {PulseProviderProps} props
 * @returns {import('react').ReactElement}
 */
export function PulseProvider({ client: given, url, options, children }) {
  if (given && url) throw new TypeError('PulseProvider: pass `client` or `url`, not both');
  if (!given && !url) throw new TypeError('PulseProvider: `client` or `url` is required');
  const [owned, setOwned] = useState(/** @type {PulseClient | null} */ (null));
  const optionsRef = useRef(options);
  useEffect(() => {
    optionsRef.current = options;
  });

  useEffect(() => {
    if (given || !url) return undefined;
    const opts = optionsRef.current ?? {};
    const created = new PulseClient(url, {
      ...opts,
      // The latest callback, not the one of the first render.
      getToken: opts.getToken ? (request) => /** @type {NonNullable<PulseClientOptions["getToken"]>} */ (optionsRef.current?.getToken ?? opts.getToken)(request) : undefined,
    });
    setOwned(created);
    return () => {
      setOwned((current) => (current === created ? null : current));
      created.close();
    };
  }, [given, url]);

  const client = given ?? owned;
  const token = options?.token;
  useEffect(() => {
    if (!given && owned && token && token !== owned.token) owned.setToken(token);
  }, [given, owned, token]);

  const value = useMemo(() => ({ client, provided: true }), [client]);
  return createElement(PulseContext.Provider, { value }, children);
}

/**
 * The context, or an error naming the hook used outside a provider.
 * @param {string} hook
 * @returns {PulseContextValue}
 */
export function usePulseContext(hook) {
  const value = useContext(PulseContext);
  if (!value.provided) throw new Error(`${hook}: no <PulseProvider> above this component`);
  return value;
}

/**
 * The provider's client: null until a client the provider creates exists
 * (its first render, or server rendering). Use it for commands
 * (`client.activity()`, `client.ping()`) and anything the hooks do not cover.
 * @returns {PulseClient | null}
 */
export function usePulseClient() {
  return usePulseContext('usePulseClient').client;
}
