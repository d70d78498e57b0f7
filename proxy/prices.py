"""Estimated cost per request from a price table (the bundled proxy/prices.json by default)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("proxy")
# Found through the package, not the current folder: under systemd the working directory
# is the state folder, and a relative path would silently mean "no prices".
BUNDLED = Path(__file__).with_name("prices.json")


class Prices:
    """Dollars per million tokens by model-name prefix; the longest prefix wins."""

    def __init__(self, table: dict[str, tuple[float, float]] | None = None) -> None:
        self.table = table or {}
        # longest first, so "gemini-2.5-flash-lite" wins over "gemini-2.5-flash"
        self._order = sorted(self.table, key=len, reverse=True)
        self._cache: dict[str, tuple[float, float] | None] = {}

    @classmethod
    def load(cls, path: str | Path | None = None, *, quiet: bool = False) -> "Prices":
        """Read a price file (None or "": the bundled one).

        One that cannot be read means no estimates, not a failed start; it is logged unless
        `quiet` (workers pass it: the server warns once, before they start).
        """
        path = Path(path) if path else BUNDLED
        try:
            data = json.loads(path.read_text())
            table = {name: (float(p.get("input", 0)), float(p.get("output", 0)))
                     for name, p in data["models"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if not quiet:
                reason = exc.strerror if isinstance(exc, OSError) else exc
                log.warning("price table %s cannot be read (%s): no cost estimates", path, reason)
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
