"""proxy.translate stays framework-free: importing it pulls in no web, HTTP or DB stack."""
import subprocess
import sys

FORBIDDEN = ("flask", "werkzeug", "requests", "gevent", "sqlite3")
MODULES = ("proxy.translate", "proxy.translate.chat", "proxy.translate.chat_stream",
           "proxy.translate.responses", "proxy.translate.responses_stream", "proxy.translate.embeddings",
           "proxy.translate.models", "proxy.translate.schema", "proxy.translate.signatures",
           "proxy.translate.errors", "proxy.translate.sse", "proxy.translate.params",
           "proxy.translate.builtins", "proxy.translate.grounding", "proxy.translate.logprobs",
           "proxy.translate.outputs", "proxy.translate.audio")


def test_import_hygiene_in_fresh_interpreter():
    code = (
        "import sys\n"
        f"for m in {MODULES!r}: __import__(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__file__.rsplit("/tests/", 1)[0])
    assert out.stdout.strip() == "", f"translate imported {out.stdout.strip()}"
