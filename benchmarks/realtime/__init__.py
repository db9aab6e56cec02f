"""Real time under load: the product against a naive in-request server, in the same run.

(`servers` starts both, `client` sends the requests of a phase, `cpu` reads the CPU each
component used, `profile` samples the product's processes with py-spy for ``--profile``,
`report` writes the results; `__main__` runs it.)

    python -m benchmarks.realtime                                   # 1 and 32 clients, 300 requests each
    python -m benchmarks.realtime --requests 40 --warmup 5          # a quick check
    python -m benchmarks.realtime --concurrency 1 8 32 --out benchmarks/results/realtime.md
    python -m benchmarks.realtime --rounds 1 --concurrency 32 --out - --profile runs/profile  # where the CPU goes

It starts both servers itself and sends the same images (CIFAR-10 JPEGs from ``--images``, else
generated PNGs) from the same HTTP client (`benchmarks.client.Api`, one keep-alive connection per
client thread) to each, at each ``--concurrency`` level, in ``--rounds`` (3) alternating rounds
(naive, product, then product, naive, ...: this machine's speed drifts by tens of percent over
minutes, and interleaving gives both servers the same drift; the table pools the rounds, and the
ratios of each round are listed under the pooled ones):

* **product** (services mode, production settings): gunicorn with uvicorn (ASGI) workers,
  PostgreSQL (database ``--database``, dropped and recreated), Redis (``--broker``) for the
  queue and the push, one Celery worker with micro-batching (``--batch-size``,
  ``--batch-wait-ms``) and ``--worker-concurrency`` pool processes (2, as the compose file's CPU
  worker: while one runs a batch, the other collects the next; a lone image runs on all the
  CPUs, ``--worker-lone-threads``). A request is ``POST /api/v1/classifications/?wait=30``; it counts when
  the answer is 202 with the job ``done`` (the answer with the members, agreement, "not sure" and
  OOD; Grad-CAM maps are the API's ``?explain=true``).
* **product+maps** (``--with-heatmaps``): the same server, ``?wait=30&explain=true`` as the web
  form asks: the answer still comes first, the maps are drawn after it by the same worker. The
  next phase starts only when every map is drawn.
* **naive** baseline: `benchmarks.naive_app`, the model inside the request, one image per forward
  pass, under gunicorn ``--naive-workers`` x ``--naive-threads`` (gthread). A request counts when
  it answers 200 with predictions.

For each level and server it prints (and writes to ``--out``, default
benchmarks/results/realtime.md, rewritten after every phase so an interrupted run leaves what
it measured) p50/p95/p99 end-to-end latency, throughput, errors, the ratios product/naive, and
for the product where the time went (queue wait, batch run, web + push; mean batch size) from
the jobs' own timestamps, and where the cores went: the CPU milliseconds each component (web,
worker, naive server, PostgreSQL, Redis, the client, the rest of the machine) spent per answered
image, the share of the cores left idle, and the throughput that total allows (`cpu`, from
/proc; on two cores the 32-client throughput is that budget). At the end every accepted job is looked up: lost = accepted - done.
The bundle is ``--bundle`` (default bundles/default). Both servers run torch with one thread per
process (``--torch-threads``). Everything it started is stopped at the end, by process group.

``--profile DIR`` runs the product's web server and worker under py-spy (``pip install py-spy``,
in requirements-dev.txt) and writes their collapsed stacks and ``DIR/profile.md``, the functions
with the most samples per component, inclusive and self. The sampler slows what it samples (the
32-client throughput about halves), so a profiled run's latencies are marked as such.

This is a benchmark: it prints numbers and asserts nothing; its exit status is 1 only when
product jobs were lost. The numbers mean nothing without the machine's load, so the load average
is recorded at the start and end of each phase.
"""
