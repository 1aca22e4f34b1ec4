import type { Cache } from 'failsoft'
import type { AppDatabase, Project } from '../db.js'
import {
  email,
  HttpError,
  id,
  notFound,
  objectBody,
  optionalText,
  text,
  type Router,
} from '../http.js'
import type { AppTasks, DispatchRecord } from '../tasks.js'

/**
 * The seed's projects API, served through the cache (TTL 300 s): Redis while it is
 * available, failsoft's memory tier while it is not, the database on a miss. The `x-cache`
 * header says which one answered. Writes go to the database, then invalidate the cached
 * list and the project: while Redis is down failsoft journals those deletes and applies
 * them to Redis before reads go back to it, so no stale project is served after recovery.
 */

export const PROJECT_TTL_SECONDS = 300
export const LIST_KEY = 'projects:list'
export const projectKey = (projectId: number): string => `projects:${projectId}`

export type CacheSource = 'redis' | 'memory' | 'database'

/** Drop the cached list and the given projects (after any write that changes them). */
export async function invalidateProjects(cache: Cache, ids: readonly number[]): Promise<void> {
  await Promise.all([cache.delete(LIST_KEY), ...ids.map((n) => cache.delete(projectKey(n)))])
}

/** Read through the cache and say where the answer came from. */
async function cached<T>(
  cache: Cache,
  key: string,
  load: () => T,
): Promise<{ value: T; source: CacheSource }> {
  let loaded = false
  const value = await cache.getOrSet<T>(
    key,
    () => {
      loaded = true
      return load()
    },
    { ttlSeconds: PROJECT_TTL_SECONDS },
  )
  return { value, source: loaded ? 'database' : cache.backend }
}

const TITLE = { min: 3, max: 120, singleLine: true }
const DESCRIPTION = { max: 4000 }
const OWNER = { max: 80, singleLine: true }

export interface ProjectDeps {
  db: AppDatabase
  cache: Cache
  tasks: AppTasks
}

export function projectRoutes(router: Router, { db, cache, tasks }: ProjectDeps): void {
  router.get('/api/projects', async () => {
    const { value, source } = await cached<Project[]>(cache, LIST_KEY, () => db.listProjects())
    return { body: { projects: value }, headers: { 'x-cache': source } }
  })

  router.get('/api/projects/:id', async ({ params }) => {
    const projectId = id(params.id, 'id')
    const { value, source } = await cached<Project>(cache, projectKey(projectId), () => {
      const project = db.getProject(projectId)
      // Thrown, not cached: an unknown id must not fill the cache.
      if (project === undefined) throw notFound('project')
      return project
    })
    return { body: { project: value }, headers: { 'x-cache': source } }
  })

  router.post('/api/projects', async ({ json }) => {
    const body = objectBody(await json(), ['title', 'description', 'owner', 'email'])
    const input = {
      title: text(body.title, 'title', TITLE),
      description: optionalText(body.description, 'description', DESCRIPTION) ?? '',
      owner: optionalText(body.owner, 'owner', OWNER) ?? '',
    }
    const address = body.email === undefined ? undefined : email(body.email, 'email')
    const project = db.createProject(input)
    await invalidateProjects(cache, [project.id])
    const dispatches: DispatchRecord[] = [await tasks.embedProject(project)]
    if (address !== undefined) {
      // The address goes to the task only: it is neither stored with the project nor cached.
      dispatches.push(
        await tasks.sendEmail(
          {
            to: address,
            subject: `Welcome, your project "${project.title}" is online`,
            body: `Hello ${project.owner || 'there'},\n\nyour project "${project.title}" (#${project.id}) is now listed.\n`,
          },
          { idempotencyKey: `welcome:${project.id}` },
        ),
      )
    }
    return { status: 201, body: { project, dispatches } }
  })

  router.patch('/api/projects/:id', async ({ params, json }) => {
    const projectId = id(params.id, 'id')
    const body = objectBody(await json(), ['title', 'description', 'owner'])
    const patch = {
      ...(body.title !== undefined && { title: text(body.title, 'title', TITLE) }),
      ...(body.description !== undefined && {
        description: text(body.description, 'description', DESCRIPTION),
      }),
      ...(body.owner !== undefined && { owner: text(body.owner, 'owner', OWNER) }),
    }
    if (Object.keys(patch).length === 0) {
      throw new HttpError(400, 'empty_patch', 'send at least one of title, description, owner')
    }
    const project = db.updateProject(projectId, patch)
    if (project === undefined) throw notFound('project')
    await invalidateProjects(cache, [projectId])
    const dispatches = [await tasks.embedProject(project)]
    return { body: { project, dispatches } }
  })

  router.post('/api/projects/:id/support', async ({ params }) => {
    const projectId = id(params.id, 'id')
    const project = db.supportProject(projectId)
    if (project === undefined) throw notFound('project')
    await invalidateProjects(cache, [projectId])
    return { body: { project } }
  })
}
