// ssegate: the event types of a job's progress stream and a client that
// watches one over the platform's EventSource. No runtime dependencies; it
// runs in browsers and in Node (pass the eventsource package's EventSource).
export type * from './events.js';
export { isTerminal } from './events.js';
export { watchReport, fetchReport, compareIds } from './client.js';
export type {
  ConnectionState,
  EventSourceConstructor,
  EventSourceLike,
  MessageEventLike,
  ReportWatch,
  RequestOptions,
  TokenSource,
  WatchEventMap,
  WatchHandler,
  WatchOptions,
} from './client.js';
export { GatewayError, JobFailedError, WatchClosedError } from './errors.js';
