// @pulsehub/react: React hooks on @pulsehub/client. Plain ES modules with
// no JSX (React.createElement), so the files are the package: no build step.
//
//   <PulseProvider client={client}> or <PulseProvider url="wss://…/ws" options={{ getToken }}>
//   useConnectionState() · useConnectionStatus() · usePulseClient()
//   useStats(scope) · usePresence(scope) · useFeed(scope, { limit })
//   useNotifications(userId?) · useChannel(channel, onMessage)

export { PulseProvider, PulseContext, usePulseClient } from './provider.js';
export { useConnectionState, useConnectionStatus, useStats, usePresence, useFeed, useNotifications, useChannel } from './hooks.js';

/** @typedef {import('./provider.js').PulseProviderProps} PulseProviderProps */
/** @typedef {import('./provider.js').PulseContextValue} PulseContextValue */
/** @typedef {import('./hooks.js').StatsState} StatsState */
/** @typedef {import('./hooks.js').PresenceState} PresenceState */
/** @typedef {import('./hooks.js').FeedOptions} FeedOptions */
/** @typedef {import('./hooks.js').FeedState} FeedState */
/** @typedef {import('./hooks.js').NotificationsState} NotificationsState */
/** @typedef {import('./hooks.js').NotificationsResult} NotificationsResult */
/** @typedef {import('./hooks.js').ChannelOptions} ChannelOptions */
/** @typedef {import('./hooks.js').ChannelState} ChannelState */
