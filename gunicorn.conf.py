"""gunicorn settings for `make run`; the production tuning comes with the operations guide."""

import multiprocessing
import os

workers = int(os.environ.get("REGISTRY_WORKERS", min(4, multiprocessing.cpu_count() * 2)))
timeout = 30
graceful_timeout = 20
keepalive = 5
# NOTE: the access log carries method, path, status and timing only: no query string and no
# headers, so nothing a member sends (signatures, digests) or any identifier beyond the path lands
# in the log. National IDs never appear in paths by design.
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
loglevel = "info"
