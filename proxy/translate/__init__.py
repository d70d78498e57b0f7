"""Pure translation between the OpenAI and Gemini wire formats: no Flask, no HTTP, no I/O."""
from .chat import ChatOptions, chat_request_to_gemini, gemini_to_chat_completion, urls_to_fetch
from .chat_stream import ChatStreamTranslator
from .embeddings import EmbedOptions, embeddings_request_to_gemini, gemini_to_embeddings
from .errors import TranslationError, gemini_error_to_openai
from .models import gemini_model_to_openai, gemini_models_to_openai, normalise_model
from .responses import (ResponsesOptions, ResponsesStreamTranslator, gemini_to_response,
                        responses_request_to_gemini)
from .schema import clean_schema
from .sse import SSE_DONE, SSEParser, sse, sse_event

__all__ = [
    "ChatOptions", "ChatStreamTranslator", "EmbedOptions", "ResponsesOptions",
    "ResponsesStreamTranslator", "SSEParser", "SSE_DONE", "TranslationError",
    "chat_request_to_gemini", "clean_schema", "embeddings_request_to_gemini",
    "gemini_error_to_openai", "gemini_model_to_openai", "gemini_models_to_openai",
    "gemini_to_chat_completion", "gemini_to_embeddings", "gemini_to_response",
    "normalise_model", "responses_request_to_gemini", "sse", "sse_event", "urls_to_fetch",
]
