import type { FlowJob, FlowJobNode, JobsOptions } from 'bullmq'
import { InvalidFlowError } from '../errors.js'
import {
  prepareJob,
  type DispatchHandle,
  type DispatchOptions,
  type PreparedJob,
  type TaskDefinition,
} from './task.js'

/**
 * A flow: a parent task that runs once all its children have completed (BullMQ's flows), each
 * child a task of the same queue, possibly with children of its own. `options` are a
 * dispatch's, but an idempotency key (a flow is added whole, under ids of its own).
 */
export interface FlowNode {
  readonly task: string
  readonly args?: unknown
  readonly options?: Omit<DispatchOptions, 'idempotencyKey'> | undefined
  readonly children?: readonly FlowNode[] | undefined
}

/** The task ids of a flow as added: the node's own, then its children's in order. */
export interface FlowIds {
  readonly id: string
  readonly task: string
  readonly children: readonly FlowIds[]
}

/**
 * What `tasks.flow()` resolves with: the parent's dispatch handle (`mode` 'queued',
 * 'rejected' or 'unconfirmed'; `result()` waits for the parent's value) and every node's id.
 */
export type FlowHandle<R = unknown> = DispatchHandle<R> & { readonly ids: FlowIds }

/** Nodes in one flow, at most (BullMQ adds a flow in one transaction). */
export const MAX_FLOW_NODES = 1000
/** Levels of children, at most. */
export const MAX_FLOW_DEPTH = 16

/** A flow validated: every node a prepared job (its task id is its BullMQ job id). */
export interface PreparedFlow {
  readonly job: PreparedJob
  readonly children: readonly PreparedFlow[]
}

/**
 * Validate a flow and prepare each node as a dispatch would (arguments, options, the task
 * defined), before anything is sent. Throws InvalidFlowError for the shape, and what a
 * dispatch throws for a node (InvalidTaskArgsError, UnknownTaskError).
 */
export function prepareFlow(
  root: unknown,
  queue: string,
  definition: (name: unknown) => TaskDefinition,
  maxArgsBytes: number,
): PreparedFlow {
  let nodes = 0
  const visit = (node: unknown, depth: number): PreparedFlow => {
    if (typeof node !== 'object' || node === null || Array.isArray(node)) {
      throw new InvalidFlowError('a flow node must be an object { task, args?, children? }', node)
    }
    const n = node as Record<string, unknown>
    for (const key of Object.keys(n)) {
      if (key !== 'task' && key !== 'args' && key !== 'options' && key !== 'children') {
        throw new InvalidFlowError(`unknown flow node key "${key.slice(0, 40)}"`, node)
      }
    }
    if (++nodes > MAX_FLOW_NODES) {
      throw new InvalidFlowError(`a flow has at most ${MAX_FLOW_NODES} nodes`, nodes)
    }
    if (depth > MAX_FLOW_DEPTH) {
      throw new InvalidFlowError(`a flow is at most ${MAX_FLOW_DEPTH} levels deep`, depth)
    }
    const options = n.options as DispatchOptions | undefined
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw new InvalidFlowError('flow node options must be an object', options)
    }
    if (options?.idempotencyKey !== undefined) {
      throw new InvalidFlowError(
        'a flow node takes no idempotencyKey (a flow is added whole, under ids of its own)',
        options.idempotencyKey,
      )
    }
    const prepared = prepareJob(queue, definition(n.task), n.args ?? {}, options, maxArgsBytes)
    // The task id is the node's BullMQ job id: what ties a child's value to it, and a result
    // wait to the job.
    const job: PreparedJob = { ...prepared, idIsJobId: true }
    const children = n.children
    if (children !== undefined && !Array.isArray(children)) {
      throw new InvalidFlowError('flow node children must be an array of nodes', children)
    }
    return { job, children: (children ?? []).map((child) => visit(child, depth + 1)) }
  }
  return visit(root, 0)
}

/**
 * The BullMQ flow of a prepared one. `options(job)` are the node's job options (what a
 * dispatch would add it with); every child fails its parent when it fails for good
 * (`failParentOnFailure`), so that a parent never waits for ever on a child that will not
 * complete.
 */
export function toBullFlow(
  flow: PreparedFlow,
  queueName: string,
  prefix: string,
  options: (job: PreparedJob) => JobsOptions,
): FlowJob {
  const node = (f: PreparedFlow, child: boolean): FlowJobNode => {
    const opts: JobsOptions = { ...options(f.job), ...(child && { failParentOnFailure: true }) }
    const base = { name: f.job.name, queueName, prefix, data: f.job.args, opts }
    return f.children.length === 0
      ? base
      : { ...base, children: f.children.map((c) => node(c, true)) }
  }
  return node(flow, false) as FlowJob
}

/** The ids of a prepared flow, for its caller. */
export function flowIds(flow: PreparedFlow): FlowIds {
  return {
    id: flow.job.id,
    task: flow.job.name,
    children: flow.children.map(flowIds),
  }
}
