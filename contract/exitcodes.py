"""Exit codes the trainer promises its launchers (torch-free: the operator reads these too).

A retry cannot fix a usage or config error, so the operator fails such a job at once instead of restarting it.
"""

SUCCESS = 0
FAILURE = 1          # anything else: a crash, a lost peer; worth a restart from the last checkpoint
USAGE_ERROR = 2      # argparse's own code for a bad command line
CONFIG_ERROR = 3     # the config or a file it names is wrong
INTERRUPTED_BASE = 128  # + the signal number, as shells report a process stopped by a signal
NON_RETRYABLE = frozenset({USAGE_ERROR, CONFIG_ERROR})
