"""ProxyWorker's config: gunicorn's settings, read as plain attributes."""
from __future__ import annotations

from gunicorn.config import Config

from proxy.serving.gunicorn_conf import options
from proxy.serving.worker import freeze
from proxy.settings import Settings


def test_a_frozen_config_reads_every_setting_as_gunicorn_would(tmp_path):
    cfg = Config()
    for name, value in options(Settings(db_path=str(tmp_path / "w.db"))).items():
        cfg.set(name, value)
    before = {name: getattr(cfg, name) for name in cfg.settings}
    freeze(cfg)
    assert {name: getattr(cfg, name) for name in cfg.settings} == before
    assert "keepalive" in vars(cfg) and cfg.keepalive == 75  # a plain attribute now
    assert not cfg.is_ssl  # properties still compute, from the attributes
    assert [str(n) for n in cfg.forwarded_allow_networks()] == ["127.0.0.1/32", "::1/128"]
