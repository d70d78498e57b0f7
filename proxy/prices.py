"""Estimated cost per request from the price table in data/prices.json."""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("proxy")


class Prices:
    """Dollars per million tokens by model-name prefix; the longest prefix wins."""

    def __init__(self, table: dict[str, tuple[float, float]] | None = None) -> None:
        self.table = table or {}
        # longest first, so "gemini-2.5-flash-lite" wins over "gemini-2.5-flash"
        self._order = sorted(self.table, key=len, reverse=True)
        self._cache: dict[str, tuple[float, float] | None] = {}

    @classmethod
    def load(cls, path: str | Path) -> "Prices":
        """Read a price file; a missing or broken one means no estimates, not a failed start."""
        try:
            data = json.loads(Path(path).read_text())
            table = {name: (float(p.get("input", 0)), float(p.get("output", 0)))
                     for name, p in data["models"].items()}
        except FileNotFoundError:
            return cls()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("price table %s is unreadable (%s): no cost estimates", path, exc)
            return cls()
        return cls(table)

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """Return the estimated cost in dollars (0 for models without a price)."""
        if model not in self._cache:
            self._cache[model] = next((self.table[p] for p in self._order if model.startswith(p)),
                                      None)
        price = self._cache[model]
        if price is None:
            return 0.0
        return (tokens_in * price[0] + tokens_out * price[1]) / 1_000_000
