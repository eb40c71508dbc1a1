"""`python -m zoo.sweep sweeps/x.yaml --local [--count N]`: see `zoo.sweeps.local`."""
import sys

from zoo.sweeps.local import main

if __name__ == "__main__":
    sys.exit(main())
