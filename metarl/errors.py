"""Errors that mean "the user asked for something we cannot do": one line, a documented exit code.

Exit codes of `metarl` (also in the README's reliability section):

    0   done
    1   unexpected failure (a bug: a traceback is printed)
    2   bad input: unknown algorithm or benchmark, bad setting, missing or corrupt file
    3   the run is being written by another live process (its lock is held)
    4   `metarl verify` found runs that are not complete and intact
    74  the results directory cannot be written or read (read-only, full disk, permissions)
    75  stopped by SIGTERM/SIGINT after writing a checkpoint: rerun the same command to resume
"""


class UsageError(Exception):
    """Bad input (unknown algorithm or benchmark, bad key or value, missing or corrupt file).

    The CLI prints `metarl: error: <message>` on one line and exits with `exit_code`, having
    written nothing.
    """

    exit_code = 2


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_PROBLEMS = 4
# EX_IOERR in sysexits.h
EXIT_IO = 74
# Stopped by SIGTERM/SIGINT after writing a checkpoint; rerunning the same command resumes.
# 75 is EX_TEMPFAIL in sysexits.h: "try again later".
EXIT_PREEMPTED = 75
