"""What every stage script shares: progress messages and turning user errors into one clear line."""

import sys
import time
from typing import Callable

from ferlab.errors import FerlabError

_START = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(); a FerlabError ends it with its message and exit status 1."""
    from ferlab.quiet import import_tensorflow

    import_tensorflow()
    try:
        main()
    except FerlabError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; outputs of this stage were left as they were.", file=sys.stderr)
        sys.exit(130)
