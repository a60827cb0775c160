"""``python -m dpt_ros.bag``: see ``dpt_ros.bag.cli``."""

import sys

from dpt_ros.bag.cli import main

sys.exit(main())
