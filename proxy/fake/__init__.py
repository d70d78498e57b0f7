"""Pieces of the fake Gemini API; `proxy.fake.server` is the entry point."""
