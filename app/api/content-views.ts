import type { AppDatabase } from '../db.js'
import { nearest } from '../embedding.js'
import { email, id, notFound, objectBody, text, type Router } from '../http.js'
import type { AppTasks } from '../tasks.js'

/**
 * The seed's content views: embeddings of project texts ("similar projects"), the
 * notification emails and the outbox that stands in for SMTP. Dispatches run on a worker
 * when Redis is up and inline (in this request) when it is down — the answer says which.
 */
export function contentRoutes(router: Router, deps: { db: AppDatabase; tasks: AppTasks }): void {
  const { db, tasks } = deps

  router.get('/api/projects/:id/similar', ({ params }) => {
    const projectId = id(params.id, 'id')
    if (db.getProject(projectId) === undefined) throw notFound('project')
    const vectors = db.embeddings()
    const own = vectors.find((entry) => entry.projectId === projectId)
    if (own === undefined) return { body: { embedded: false, similar: [] } }
    const others = vectors.filter((entry) => entry.projectId !== projectId)
    const similar = nearest(own.vector, others, 3).flatMap(({ item, score }) => {
      const project = db.getProject(item.projectId)
      return project === undefined
        ? []
        : [{ id: project.id, title: project.title, score: Math.round(score * 1000) / 1000 }]
    })
    return { body: { embedded: true, similar } }
  })

  router.post('/api/projects/:id/embed', async ({ params }) => {
    const projectId = id(params.id, 'id')
    const project = db.getProject(projectId)
    if (project === undefined) throw notFound('project')
    const dispatch = await tasks.embedProject(project)
    return { status: 202, body: { dispatch } }
  })

  router.post('/api/notifications', async ({ json }) => {
    const body = objectBody(await json(), ['to', 'subject', 'body'])
    const dispatch = await tasks.sendEmail({
      to: email(body.to, 'to'),
      subject: text(body.subject, 'subject', { min: 1, max: 150, singleLine: true }),
      body: text(body.body, 'body', { min: 1, max: 5000 }),
    })
    return { status: 202, body: { dispatch } }
  })

  router.get('/api/outbox', () => ({ body: { emails: db.listOutbox(30) } }))
}
