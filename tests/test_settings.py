"""Settings: environment, .env, overrides, and one clear line for a bad value."""
import dataclasses
from pathlib import Path

import pytest

from proxy.settings import Settings, SettingsError, describe, load_settings


def test_defaults_are_safe():
    s = load_settings({}, dotenv=None)
    assert s.bind == "127.0.0.1:5001"
    assert s.db_path == "data/keys.db"
    assert s.log_level == "INFO"
    assert s.upstream_url == "https://generativelanguage.googleapis.com"


def test_lists_and_aliases_parse():
    s = load_settings({"GOOGLE_KEYS": "a-key-0001| b-key-0002 ||a-key-0001",
                       "MODEL_ALIASES": "gpt-4o=models/gemini-2.5-flash|default=gemini-2.5-pro"},
                      dotenv=None)
    assert s.google_keys == ["a-key-0001", "b-key-0002"]
    assert s.model_aliases == {"gpt-4o": "gemini-2.5-flash", "default": "gemini-2.5-pro"}


def test_env_wins_over_dotenv_and_flags_win_over_env(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_LEVEL=DEBUG\nPROXY_WORKERS=3\nPROXY_DB=from-dotenv.db\n")
    s = load_settings({"PROXY_WORKERS": "5"}, dotenv=env_file, overrides={"PROXY_DB": "flag.db"})
    assert (s.log_level, s.workers, s.db_path) == ("DEBUG", 5, "flag.db")


@pytest.mark.parametrize("env,value", [("PROXY_WORKERS", "zero"), ("PROXY_WORKERS", "0"),
                                       ("PROXY_BIND", "nope"), ("LOG_LEVEL", "LOUD"),
                                       ("UPSTREAM_URL", "ftp://x"), ("MODEL_ALIASES", "gpt-4o"),
                                       ("TRUSTED_PROXIES", "not-an-ip"),
                                       ("MAX_COOLDOWN_WAIT", "-1")])
def test_bad_values_name_the_setting(env, value):
    with pytest.raises(SettingsError) as err:
        load_settings({env: value}, dotenv=None)
    assert env in str(err.value)
    assert "\n" not in str(err.value)


def test_env_example_documents_every_setting():
    text = (Path(__file__).parent.parent / ".env.example").read_text()
    for env, _, _ in describe():
        # set, or shown commented out where the default is computed (PROXY_WORKERS)
        line = f"\n{env}=" if f"\n{env}=" in text else f"\n#{env}="
        assert line in text, f"{env} is missing"
        above = text.split(line)[0].rsplit("\n", 1)[-1]
        assert above.startswith("#"), f"{env} has no comment above it"


def test_default_workers_follow_the_cores():
    import os

    assert load_settings({}, dotenv=None).workers == (os.cpu_count() or 1) + 1


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().bind = "0.0.0.0:1"  # type: ignore[misc]
