import type { AppDatabase } from '../db.js'
import type { Router } from '../http.js'
import type { AppTasks } from '../tasks.js'

/**
 * The seed's impact views: the impact ranking computed by the "compost" batch, its recent
 * runs, and a button that dispatches a run now. The answer says what became of the dispatch:
 * 'queued' (a worker runs it), or while Redis is down 'spooled' (it waits in the durable
 * spool and is handed to the queue once Redis is back).
 */
export function impactRoutes(router: Router, deps: { db: AppDatabase; tasks: AppTasks }): void {
  const { db, tasks } = deps

  router.get('/api/impact', () => {
    const projects = db
      .listProjects()
      .map(({ id, title, impactScore, supporters }) => ({ id, title, impactScore, supporters }))
    return { body: { projects, runs: db.listBatchRuns(10) } }
  })

  router.post('/api/impact/recompute', async () => {
    const dispatch = await tasks.compost({ reason: 'manual' })
    return { status: 202, body: { dispatch } }
  })
}
