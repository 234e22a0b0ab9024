// ssegate/publisher: the Node worker library. It publishes a job's events
// to Redis exactly as the Go publisher (publisher/ in the repository) does:
// one atomic run of the protocol's publish script per event. Node only; it
// needs a node-redis v5 client (the `redis` package, a peer dependency).

export { Publisher, PUBLISH_SCRIPT_SHA1, PROTOCOL_VERSION, DEFAULTS, isValidJobId } from './publisher.js';
export type { Job, ProgressStep, PublishableStatus, PublisherOptions, ScriptClient, ScriptCallOptions } from './publisher.js';
export {
  PublishError,
  JobNotFoundError,
  JobFinishedError,
  JobExistsError,
  IdempotencyKeyReusedError,
  ValidationError,
  ProtocolError,
  RedisCommandError,
} from './errors.js';
export type { PublishErrorCode, PublishOperation, ProtocolErrorCode, ValidationErrorCode } from './errors.js';

import { PUBLISH_SCRIPT as script } from './script.js';

/**
 * The publish script of protocol version 1 (pkg/protocol/publish.lua, byte
 * for byte), for callers that run it themselves; docs/protocol.md describes
 * its keys, arguments and replies.
 */
export const PUBLISH_SCRIPT: string = script;
