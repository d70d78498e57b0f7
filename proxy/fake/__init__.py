"""Pieces of the fake Gemini API; `proxy.fake_upstream` is the entry point."""
