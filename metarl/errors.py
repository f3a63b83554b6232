"""Errors that mean "the user asked for something we cannot do": one line, exit code 2."""


class UsageError(Exception):
    """Bad input (unknown algorithm or benchmark, bad key or value, missing or corrupt file).

    The CLI prints `metarl: error: <message>` on one line and exits with code 2, having
    written nothing.
    """


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# Stopped by SIGTERM/SIGINT after writing a checkpoint; rerunning the same command resumes.
# 75 is EX_TEMPFAIL in sysexits.h: "try again later".
EXIT_PREEMPTED = 75
