"""The one base class of every error tamor raises on purpose: bad input, a refused model, a registry
that does not resolve. The CLI turns any of them into one clear line and exit code 2; anything else
is a bug and keeps its traceback."""


class TamorError(Exception):
    """An error whose message tells the user what is wrong and what to do."""
