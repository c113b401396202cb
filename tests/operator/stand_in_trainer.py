"""A stand-in for the trainer in `torchyard run` tests: prints its torchrun env and exits 0."""

import os
import sys

keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"]
line = "stand-in " + " ".join(f"{key}={os.environ.get(key)}" for key in keys)
line += " ARGS=" + ",".join(sys.argv[1:])
# One write per line: unbuffered print() writes the newline separately, and the ranks share one stdout.
sys.stdout.write(line + "\n")
sys.stdout.flush()
sys.exit(int(os.environ.get("STAND_IN_EXIT", "0")) if os.environ.get("RANK") == "1" else 0)
