"""The one way a service process starts: `run_service(main)`, used by `python -m services.X`
and `soundhive serve X`."""

import logging
import os
import sys
from collections.abc import Callable

from threadpoolctl import threadpool_limits

from shared.errors import UserError
from shared.native import quiet_native_stderr


def run_service(main: Callable[[], int | None]) -> None:
    """Run a service's main with one-line logging and exit with its status. A user mistake (a
    UserError: bad setting, missing model, bad source, bad rules file, port in use) is one line
    on stderr and exit status 2."""
    if os.environ.get("SOUNDHIVE_VERBOSE") != "1":
        quiet_native_stderr()
    logging.basicConfig(
        level=os.environ.get("SOUNDHIVE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # numpy's BLAS would spin a thread per core for the classifier's small matrix products and
    # double its CPU; a service's parallelism is its replicas (and SOUNDHIVE_THREADS for LiteRT).
    threadpool_limits(1, user_api="blas")
    try:
        status = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
