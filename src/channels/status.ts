/** `layer.status()` / the layer's entry in `failsoft.status()`. JSON-safe; counters since creation. */
export interface ChannelLayerStatus {
  /** 'redis' while cross-process delivery goes through Redis, 'memory' while on the fallback. */
  backend: 'redis' | 'memory'
  processId: string
  /** Receive buffers, groups with local members, and messages waiting in buffers. */
  channels: number
  groups: number
  /** Messages waiting for receivers: in channel buffers and in full channels' backlogs. */
  buffered: number
  /** Pub/sub topics subscribed now. */
  subscriptions: number
  /** After a recovery, publishes wait in the outbox until it is flushed. */
  holding: boolean
  /** Publishes awaiting Redis' reply. */
  inFlight: number
  sent: number
  groupSent: number
  published: number
  /** Messages from other processes handed to local members. */
  remoteReceived: number
  /**
   * Deliveries skipped because the receiving channel was full (`capacity`); for a message from
   * another process, only once the channel's backlog was full too or it waited there 5 s.
   */
  skippedFull: number
  /** Messages dropped as older than `expirySeconds` (in buffers, or on arrival). */
  expired: number
  /** Channels removed from their groups because their messages expired unread. */
  abandonedChannels: number
  membershipsExpired: number
  /** Group messages from other processes not delivered to members that joined after they were sent. */
  joinedAfterSend: number
  /** Cross-process messages known missing and not recoverable (same as `repair.lost`). */
  crossProcessGaps: number
  /** Copies of a message received twice (a re-sent publish, a repair) and skipped. */
  duplicatesSkipped: number
  malformed: number
  publishErrors: number
  /** Sends to a specific channel no process was listening for. */
  undeliverable: number
  safeGroupSendFailures: number
  /** Cross-process messages waiting for Redis; dropped oldest first at each bound. */
  outbox: {
    size: number
    bytes: number
    oldestAgeMs: number
    buffered: number
    flushed: number
    droppedCount: number
    droppedBytes: number
    droppedAge: number
    /** Messages still in the outbox when the layer closed (Redis unavailable): never sent. */
    droppedAtClose: number
  }
  /** Gap repair (see docs/channels.md): what this process keeps for others and asks of them. */
  repair: {
    /** Messages this process sent and still keeps for receivers that missed them. */
    retained: number
    retainedBytes: number
    /** Messages waiting here behind a gap being repaired. */
    held: number
    /** Ranges asked of other processes. */
    requested: number
    /** Messages received again at this process' request. */
    repaired: number
    /** Messages this process sent again at others' request. */
    resentToOthers: number
    /** Messages given up: the publisher no longer kept them, or did not answer. */
    lost: number
    /** Closed publishers' retention: left in Redis by this process's close() (0 or 1). */
    willsLeft: number
    /** Closed publishers' wills read after a re-subscription, and messages repaired from them. */
    willsLoaded: number
    repairedFromWills: number
    /** Wills beyond the 256 one re-subscription reads: their messages missed here are lost. */
    willsSkipped: number
  }
  websocketClients: number
}
