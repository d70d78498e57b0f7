"""The console's panes, in the order of their number keys."""
from __future__ import annotations

from .base import Pane
from .keys import KeysPane
from .logs import LogsPane
from .requests import RequestsPane
from .stats import StatsPane
from .users import UsersPane

PANES: list[type[Pane]] = [RequestsPane, LogsPane, KeysPane, StatsPane, UsersPane]

__all__ = ["PANES", "KeysPane", "LogsPane", "Pane", "RequestsPane", "StatsPane", "UsersPane"]
