"""`python -m daemon.emulator`: the Qonto emulator's command line, where scripts expect it.

The emulator itself lives in `daemon.testing`; the daemon never imports either.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from daemon.testing.emulator import main

    sys.exit(main())
