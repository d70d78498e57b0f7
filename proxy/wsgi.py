"""The WSGI entry point for gunicorn: `gunicorn -c proxy/serving/gunicorn_conf.py proxy.wsgi:app`."""
from proxy.app import create_app

app = create_app()
