"""A stand-in for the trainer in `torchyard run` tests: prints its torchrun env and exits 0.

STAND_IN_EXIT=N: rank 1 exits N. STAND_IN_NOT_RETRYABLE=1: rank 0 also writes the trainer's termination
message saying a restart cannot help, and exits 3 (the trainer's config-error code)."""

import os
import sys

keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"]
line = "stand-in " + " ".join(f"{key}={os.environ.get(key)}" for key in keys)
line += " ARGS=" + ",".join(sys.argv[1:])
# One write per line: unbuffered print() writes the newline separately, and the ranks share one stdout.
sys.stdout.write(line + "\n")
sys.stdout.flush()
if os.environ.get("STAND_IN_NOT_RETRYABLE") and os.environ.get("RANK") == "0":
    with open(os.environ["TORCHYARD_TERMINATION_LOG"], "w") as log:
        log.write('{"retryable": false, "status": "failed"}')
    sys.exit(3)
sys.exit(int(os.environ.get("STAND_IN_EXIT", "0")) if os.environ.get("RANK") == "1" else 0)
