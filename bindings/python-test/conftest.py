"""Makes the generated module importable: bindings/test.sh writes neurite.py into
generated/ and links libneurite_ffi next to it, where the module loads it from."""

import os
import sys

GENERATED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "generated")
if not os.path.exists(os.path.join(GENERATED, "neurite.py")):
    raise RuntimeError("run bindings/generate.sh (or bindings/test.sh) first")
sys.path.insert(0, GENERATED)
