"""Pure translation between the OpenAI and Gemini wire formats: no Flask, no HTTP, no I/O."""
