import type { Failsoft } from 'failsoft'
import type { AppDatabase } from '../db.js'
import type { Router } from '../http.js'
import type { AppTasks } from '../tasks.js'

/**
 * The seed's impact views: the impact ranking computed by the "compost" batch, its recent
 * runs, and a button that runs one now. The answer says what became of it: 'queued' (a worker
 * runs it), or while Redis is unavailable 'local' (it ran in this request, in this process:
 * a spooled run would wait for Redis, for ever on a process whose Redis never returns).
 */
export function impactRoutes(
  router: Router,
  deps: { db: AppDatabase; tasks: AppTasks; failsoft: Failsoft },
): void {
  const { db, tasks, failsoft } = deps

  router.get('/api/impact', () => {
    const projects = db
      .listProjects()
      .map(({ id, title, impactScore, supporters }) => ({ id, title, impactScore, supporters }))
    return { body: { projects, runs: db.listBatchRuns(10) } }
  })

  router.post('/api/impact/recompute', async () => {
    const dispatch = await tasks.compostNow(failsoft.health.available)
    return { status: 202, body: { dispatch } }
  })
}
