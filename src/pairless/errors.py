"""The one exception type a user ever sees from pairless.

Every mistake a user can make (a missing file, an image with NaN, a wrong axes string, a folder
that is not a model) is raised as :class:`PairlessError` with a message that names the problem
*and* the fix.  The command line prints ``error: <message>`` on one line and exits with code 2;
anything else escaping is a bug in pairless, not in the user's input.
"""


class PairlessError(ValueError):
    """A problem with the user's input, described in one line together with how to fix it."""
