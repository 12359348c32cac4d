"""The errors a user sees, and the one way an exception becomes one line.

Every error whose message is meant for the user (a bad file, setting, model, source, rules
file, message, download...) derives from UserError: the CLI and services print it as
`error: <message>` and exit 2, the api answers it as a 4xx `detail`. Its message is one line,
fit to show as it is: no traceback, no secret.
"""


class UserError(Exception):
    """A mistake or condition the user can act on; str(error) is the one line they see."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, its class name when the message is empty
    (for logs, statuses and reasons made from errors that are not UserErrors)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
