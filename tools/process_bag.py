#!/usr/bin/env python3
"""Offline rosbag processing: the same as ``python -m dpt_ros.bag`` and ``dpt_bag``.

tools/process_bag.py IN [IN ...] --out OUT [--config config/kitti.yaml] [--export preview]
"""

from __future__ import annotations

import sys

from dpt_ros.bag.cli import main

if __name__ == "__main__":
    sys.exit(main())
