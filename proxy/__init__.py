"""gemini-api-proxy: many Google AI Studio keys behind one Gemini- and OpenAI-speaking endpoint."""

__version__ = "0.1.0"
