/**
 * Grouped subscription fan-out (the idea behind Hasura's multiplexed
 * subscriptions): subscribers of the same operation document, operation name
 * and variables, whose tokens see the same objects (services/visibility.ts,
 * `visibilityKey`), form a group. Each published event is executed once per
 * group, its result serialized once, and the same payload written into every
 * member's graphql-ws `next` frame; graphql-ws would otherwise execute and
 * serialize the selection set once per subscriber.
 *
 * Authorization stays per subscriber: every subscriber's own `subscribe` runs
 * first (scope checks, the service's visibility checks, with its own token), and
 * only a subscriber that passed joins a group; one refused gets its errors as
 * before. Its own event stream, never read, is closed on joining: the group's
 * stream is the first member's, and the first member's context (its loaders,
 * its viewer) serves the group after it leaves, which is sound because every
 * member has the same visibility key.
 *
 * To graphql-ws a member is an event stream that yields nothing and ends when
 * the group ends (its `complete`, or its error, then come from graphql-ws as
 * usual); the `next` frames are written by the group straight to the socket,
 * in the order the events come, before the member's stream can end.
 */
import type { ExecutionResult } from "graphql";
import type { WebSocket } from "ws";

export interface SubscriptionGroupStats {
  groups: number;
  members: number;
  /** Executions of a group's selection set, one per event per group (also `vega_subscription_executions_total`). */
  executions: number;
}

interface Member extends AsyncGenerator<never, undefined> {
  /** The frame up to the payload: `{"id":"<id>","type":"next","payload":`. */
  prefix: string;
  socket: WebSocket;
  end(error?: unknown): void;
}

interface Group {
  key: string;
  source: AsyncIterable<ExecutionResult> & { return?: () => unknown };
  members: Set<Member>;
}

/** The `next` payload graphql-ws would send: the result, with its errors as JSON when it has any. */
function payloadOf(result: ExecutionResult): string {
  const { errors, ...rest } = result;
  return JSON.stringify(errors ? { ...rest, errors: errors.map((error) => error.toJSON()) } : rest);
}

export function createSubscriptionGroups(options: { onExecution?: () => void } = {}) {
  const groups = new Map<string, Group>();
  const joinObservers = new Set<(key: string) => void>();
  let executions = 0;

  function leave(group: Group, member: Member) {
    if (!group.members.delete(member) || group.members.size > 0) return;
    // The last member left: stop listening (graphql-js closes the pubsub stream underneath).
    if (groups.get(group.key) === group) groups.delete(group.key);
    void Promise.resolve(group.source.return?.()).catch(() => {});
  }

  async function run(group: Group) {
    let failure: unknown;
    try {
      for await (const result of group.source) {
        executions++;
        options.onExecution?.();
        const payload = payloadOf(result);
        for (const member of group.members) {
          if (member.socket.readyState === member.socket.OPEN) member.socket.send(`${member.prefix}${payload}}`);
        }
      }
    } catch (error) {
      failure = error;
    }
    if (groups.get(group.key) === group) groups.delete(group.key);
    for (const member of [...group.members]) member.end(failure);
    group.members.clear();
  }

  function createMember(group: Group, socket: WebSocket, id: string): Member {
    let settle: ((result: IteratorResult<never, undefined>) => void) | undefined;
    let fail: ((error: unknown) => void) | undefined;
    let ended: { error?: unknown } | undefined;
    const done = { done: true as const, value: undefined };
    const member: Member = {
      prefix: `{"id":${JSON.stringify(id)},"type":"next","payload":`,
      socket,
      end(error) {
        if (ended) return;
        ended = { error };
        if (error !== undefined) fail?.(error);
        else settle?.(done);
      },
      next() {
        if (ended) return ended.error !== undefined ? Promise.reject(ended.error) : Promise.resolve(done);
        return new Promise((resolve, reject) => {
          settle = resolve;
          fail = reject;
        });
      },
      async return() {
        leave(group, member);
        member.end();
        return done;
      },
      async throw() {
        leave(group, member);
        member.end();
        return done;
      },
      [Symbol.asyncIterator]() {
        return member;
      },
    };
    return member;
  }

  return {
    /**
     * Adds an authorized subscriber (its socket and graphql-ws operation id) to the
     * group of `key`, starting the group on `stream` (the subscriber's own
     * execution stream) when there is none; otherwise `stream` is closed unread.
     * Returns what graphql-ws iterates for this subscriber.
     */
    join(key: string, stream: AsyncIterable<ExecutionResult>, socket: WebSocket, id: string): AsyncGenerator<never, undefined> {
      let group = groups.get(key);
      if (group) {
        void Promise.resolve((stream as { return?: () => unknown }).return?.()).catch(() => {});
      } else {
        group = { key, source: stream, members: new Set() };
        groups.set(key, group);
        void run(group);
      }
      const member = createMember(group, socket, id);
      group.members.add(member);
      for (const observer of joinObservers) observer(key);
      return member;
    },
    stats(): SubscriptionGroupStats {
      let members = 0;
      for (const group of groups.values()) members += group.members.size;
      return { groups: groups.size, members, executions };
    },
    /** Calls `observer` with the group key each time a subscriber joins a group (tests wait on it). */
    onJoin(observer: (key: string) => void): () => void {
      joinObservers.add(observer);
      return () => joinObservers.delete(observer);
    },
  };
}

export type SubscriptionGroups = ReturnType<typeof createSubscriptionGroups>;
