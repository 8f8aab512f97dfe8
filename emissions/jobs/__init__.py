"""Jobs: work bigger than a request, split into idempotent chunks that Celery workers run (docs/jobs.md).

``kinds`` says what a kind of job must provide (plan, run a chunk, finish, discard); ``runner`` is the state machine
every kind goes through, in plain Django (testable without a worker); ``emissions.tasks`` are the Celery tasks that
drive it; ``emissions.services.jobs`` submits and cancels jobs.
"""
