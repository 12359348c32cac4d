"""The one way a service process starts: `serve(name)`, used by `python -m services.X` and
`soundhive serve X`."""

import logging
import sys
from collections.abc import Callable

from threadpoolctl import threadpool_limits

from services.registry import SERVICES
from shared.config import ProcessSettings
from shared.errors import UserError
from shared.native import quiet_native_stderr
from shared.redact import RedactingFormatter, redact


def serve(name: str, **overrides: object) -> None:
    """Run service `name` in this process, its settings from the environment with the
    overrides that are not None (CLI options), and exit with its status."""
    service = SERVICES[name]
    run_service(lambda: service.main()(service.settings.load(**overrides)))


def run_service(main: Callable[[], int | None]) -> None:
    """Run a service's main with one-line logging and exit with its status. A user mistake (a
    UserError: bad setting, missing model, bad source, bad rules file, port in use) is one line
    on stderr and exit status 2."""
    try:
        process = ProcessSettings()
        if not process.verbose:
            quiet_native_stderr()
        handler = logging.StreamHandler()
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=process.log_level.upper(), handlers=[handler])
        # numpy's BLAS would spin a thread per core for the classifier's small matrix products
        # and double its CPU; a service's parallelism is its replicas (and SOUNDHIVE_THREADS for
        # LiteRT).
        threadpool_limits(1, user_api="blas")
        status = main()
    except UserError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
