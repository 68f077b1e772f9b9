"""``python -m speechbrain_mrmha <command>``: runs ``speechbrain_mrmha.app.cli``."""

import sys

from speechbrain_mrmha.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
