"""The exit statuses of every `spotwatch` command, in one place.

78 is sysexits' EX_CONFIG: systemd's `RestartPreventExitStatus=78` keeps a daemon with a bad
config from restarting in a loop.
"""

EX_OK = 0
EX_FAILURE = 1  # a fatal error, a failed preflight, a step that failed or missed its deadline
EX_NO_STATE = 1  # `status`: nothing recorded yet
EX_CONFIG = 78
