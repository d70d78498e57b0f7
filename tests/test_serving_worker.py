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


def test_trusted_proxy_networks_reach_gunicorn_whole(tmp_path):
    """gunicorn judges X-Forwarded-Proto by the same networks the app believes, not their first address."""
    cfg = Config()
    settings = Settings(db_path=str(tmp_path / "w.db"), trusted_proxies=["10.1.2.3/8", "fd00::/8"])
    for name, value in options(settings).items():
        cfg.set(name, value)
    assert [str(n) for n in cfg.forwarded_allow_networks()] == ["10.0.0.0/8", "fd00::/8"]
