"""`python -m proxy.fake`: run the fake Gemini API on its own (tests, benchmarks, the demo)."""
import sys

from proxy.fake.server import main

sys.exit(main())
