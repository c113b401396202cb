import sys

from torchyard.trainer.tools.cli import main

sys.exit(main())
