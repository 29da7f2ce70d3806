"""`python -m jobd.config --write`: regenerate the configuration docs from the settings table."""

import sys

from jobd.config.docs import main

sys.exit(main())
