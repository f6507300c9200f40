// The wire contract's shapes (PROTOCOL.md, v1) as types. Types only: this
// module has no code.

/**
 * @typedef {{ id: string, name?: string }} UserRef
 */

/**
 * @typedef {object} PresenceUser
 * @property {string} id
 * @property {string} [name]
 * @property {"online" | "idle"} status
 * @property {number} sessions
 * @property {string} since
 * @property {string} last_active
 * @property {string} [activity]
 */

/**
 * The stats body (PROTOCOL.md "Stats body").
 * @typedef {object} Stats
 * @property {string} scope
 * @property {Record<string, number>} counts
 * @property {Record<string, Record<string, number>>} states
 * @property {Record<string, number>} active_subjects
 * @property {number} online_users
 * @property {number} events_last_minute
 * @property {string | null} [last_event_at]
 */

/**
 * A domain event as the feed carries it.
 * @typedef {object} FeedEvent
 * @property {string} id
 * @property {string} kind
 * @property {{ id: string, name?: string } | null} [actor]
 * @property {{ type: string, id: string, state?: string } | null} [subject]
 * @property {Record<string, unknown>} [data]
 * @property {string} at
 */

/**
 * @typedef {object} Notification
 * @property {string} id
 * @property {"info" | "success" | "warning" | "error"} level
 * @property {string} title
 * @property {string} [body]
 * @property {string} at
 */

/**
 * @typedef {{ type: "welcome", session: string, user: UserRef, instance: string, heartbeat: number }} WelcomeFrame
 * @typedef {{ type: "subscribed", ref?: number, channel: string, offset?: number, recovered?: boolean }} SubscribedFrame
 * @typedef {{ type: "unsubscribed", ref?: number, channel: string }} UnsubscribedFrame
 * @typedef {{ type: "stats", channel: string, version: number, changed: string[], stats: Stats, polled?: boolean }} StatsFrame
 * @typedef {{ type: "presence", channel: string, op: "sync", count: number, users: PresenceUser[], polled?: boolean }} PresenceSyncFrame
 * @typedef {{ type: "presence", channel: string, op: "join" | "update", count: number, user: PresenceUser, polled?: boolean }} PresenceChangeFrame
 * @typedef {{ type: "presence", channel: string, op: "leave", count: number, user: UserRef, polled?: boolean }} PresenceLeaveFrame
 * @typedef {PresenceSyncFrame | PresenceChangeFrame | PresenceLeaveFrame} PresenceFrame
 * @typedef {{ type: "event", channel: string, offset: number, event: FeedEvent }} EventFrame
 * @typedef {{ type: "notification", channel: string, offset: number, notification: Notification }} NotificationFrame
 * @typedef {{ type: "pong", ref?: number }} PongFrame
 * @typedef {{ type: "ok", ref?: number }} OkFrame
 * @typedef {{ type: "error", ref?: number, code: string, message: string }} ErrorFrame
 */

/**
 * The frames a channel carries, after `subscribed`.
 * @typedef {StatsFrame | PresenceFrame | EventFrame | NotificationFrame} ChannelFrame
 */

/**
 * Every frame the hub sends.
 * @typedef {WelcomeFrame | SubscribedFrame | UnsubscribedFrame | ChannelFrame | PongFrame | OkFrame | ErrorFrame} ServerFrame
 */

/**
 * The frame type of a channel, from its name: `stats:…` carries StatsFrame,
 * `presence:…` PresenceFrame, `feed:…` EventFrame, `user:…` and `system`
 * NotificationFrame.
 * @template {string} C
 * @typedef {C extends `stats:${string}` ? StatsFrame
 *   : C extends `presence:${string}` ? PresenceFrame
 *   : C extends `feed:${string}` ? EventFrame
 *   : C extends `user:${string}` | "system" ? NotificationFrame
 *   : ChannelFrame} FrameOf
 */

/**
 * The answer of `GET /api/channels/{channel}/history`.
 * @typedef {{ offset: number, recovered: boolean, items: Array<EventFrame | NotificationFrame> }} HistoryPage
 */

/**
 * The part of an AbortSignal the client uses (declared here so the types
 * need neither the DOM nor Node's type definitions).
 * @typedef {{ readonly aborted: boolean, addEventListener(type: "abort", listener: () => void): void, removeEventListener(type: "abort", listener: () => void): void }} Signal
 */

/**
 * The part of an AbortController the client uses.
 * @typedef {{ readonly signal: Signal, abort(): void }} Aborter
 */

export {};
