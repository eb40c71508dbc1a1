"""`python -m zoo.leaderboard [STORE_DIR]`: regenerate the board from the stores (see `zoo.report.leaderboard`)."""
import sys

from zoo.report.leaderboard import main

if __name__ == "__main__":
    sys.exit(main())
