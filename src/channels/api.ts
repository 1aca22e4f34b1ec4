import type { ChannelMessage } from './message.js'

/**
 * The channel layer as its WebSocket consumers see it (`ctx.layer`): Django Channels' layer
 * API. `ChannelLayer` implements it; this interface exists so that the WebSocket module depends
 * on the layer's API, not on the layer's module (imports flow one way: layer → websocket).
 */
export interface ChannelLayerApi {
  readonly processId: string
  readonly closed: boolean
  readonly backend: 'redis' | 'memory'
  newChannel(prefix?: string): Promise<string>
  send(channel: string, message: ChannelMessage): Promise<void>
  receive(channel: string, options?: { signal?: AbortSignal }): Promise<ChannelMessage>
  groupAdd(group: string, channel: string): Promise<void>
  groupDiscard(group: string, channel: string): Promise<void>
  groupSend(group: string, message: ChannelMessage, options?: { except?: string }): Promise<void>
  safeGroupSend(group: string, message: ChannelMessage): Promise<boolean>
}
