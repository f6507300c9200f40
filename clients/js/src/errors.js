// The one error type of the package. `code` is either one of the protocol's
// error codes (PROTOCOL.md "Error codes"), passed through from the hub's
// `error` frame or HTTP error body, or one of the client's own codes below.

/**
 * Codes the hub sends (PROTOCOL.md).
 * @typedef {"bad_request" | "unauthorized" | "forbidden" | "not_found" | "rate_limited" | "too_large" | "limit_reached" | "internal"} ProtocolErrorCode
 */

/**
 * Codes the client itself produces:
 * - `timeout`: no reply to a command within `commandTimeoutMs`;
 * - `closed`: the client was closed (or closed itself) before the reply;
 * - `queue_full`: too many commands waiting for a connection (`maxQueuedCommands`);
 * - `network`: an HTTP request of the polling fallback or of recovery failed.
 * @typedef {"timeout" | "closed" | "queue_full" | "network"} ClientErrorCode
 */

/** @typedef {ProtocolErrorCode | ClientErrorCode} PulseErrorCode */

export class PulseError extends Error {
  /**
   * @param {PulseErrorCode | string} code
   * @param {string} message
   * @param {{ ref?: number, channel?: string, status?: number, cause?: unknown }} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'PulseError';
    /** @type {PulseErrorCode | string} */
    this.code = code;
    /** The `ref` of the command this error answers, when there was one. @type {number | undefined} */
    this.ref = details.ref;
    /** The channel concerned, for subscription errors. @type {string | undefined} */
    this.channel = details.channel;
    /** The HTTP status, for errors of HTTP requests. @type {number | undefined} */
    this.status = details.status;
  }

  /**
   * From a hub `error` frame.
   * @param {{ code?: string, message?: string, ref?: number }} frame
   * @param {string} [channel]
   */
  static fromFrame(frame, channel) {
    return new PulseError(frame.code || 'internal', frame.message || 'error', { ref: frame.ref, channel });
  }
}

/** HTTP status to protocol code, for error bodies without one. */
const STATUS_CODES = /** @type {Record<number, string>} */ ({
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  413: 'too_large',
  429: 'rate_limited',
});

/** @param {number} status */
export function codeOfStatus(status) {
  return STATUS_CODES[status] || (status >= 500 ? 'internal' : 'bad_request');
}
