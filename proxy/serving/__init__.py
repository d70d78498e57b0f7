"""Process plumbing: gunicorn with gevent workers, their hooks, and the request-body guard."""
