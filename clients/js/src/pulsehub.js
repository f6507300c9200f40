// @pulsehub/client: the entry point. Plain ES modules with no dependencies,
// for browsers (the hub serves this directory at /sdk/, so
// `import { PulseClient } from "/sdk/pulsehub.js"` works without a bundler)
// and Node >= 20 (pass the `ws` package as the WebSocket option).

export { PulseClient, INITIAL_STATUS } from './client.js';
export { PulseError } from './errors.js';
export { Subscription } from './channel.js';
export { StatsView, PresenceView, FeedView, NotificationsView } from './views.js';
export { backoff } from './backoff.js';
export { tokenClaims, tokenExpiry } from './jwt.js';
export { changedPointers } from './diff.js';

/** @typedef {import('./client.js').ConnectionState} ConnectionState */
/** @typedef {import('./client.js').ConnectionStatus} ConnectionStatus */
/** @typedef {import('./client.js').PulseClientOptions} PulseClientOptions */
/** @typedef {import('./client.js').TokenRequest} TokenRequest */
/** @typedef {import('./client.js').WebSocketConstructor} WebSocketConstructor */
/** @typedef {import('./client.js').FetchFunction} FetchFunction */
/** @typedef {import('./channel.js').SubscribedInfo} SubscribedInfo */
/** @typedef {import('./channel.js').ResetInfo} ResetInfo */
/**
 * @template {string} [C=string]
 * @typedef {import('./channel.js').SubscribeOptions<C>} SubscribeOptions
 */
/** @typedef {import('./errors.js').PulseErrorCode} PulseErrorCode */
/** @typedef {import('./views.js').FeedEntry} FeedEntry */
/** @typedef {import('./views.js').NotificationEntry} NotificationEntry */
/** @typedef {import('./types.js').ServerFrame} ServerFrame */
/** @typedef {import('./types.js').ChannelFrame} ChannelFrame */
/** @typedef {import('./types.js').WelcomeFrame} WelcomeFrame */
/** @typedef {import('./types.js').StatsFrame} StatsFrame */
/** @typedef {import('./types.js').PresenceFrame} PresenceFrame */
/** @typedef {import('./types.js').EventFrame} EventFrame */
/** @typedef {import('./types.js').NotificationFrame} NotificationFrame */
/** @typedef {import('./types.js').Stats} Stats */
/** @typedef {import('./types.js').PresenceUser} PresenceUser */
/** @typedef {import('./types.js').FeedEvent} FeedEvent */
/** @typedef {import('./types.js').Notification} Notification */
/** @typedef {import('./types.js').UserRef} UserRef */
/**
 * @template {string} C
 * @typedef {import('./types.js').FrameOf<C>} FrameOf
 */
