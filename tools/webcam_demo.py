#!/usr/bin/env python3
"""The webcam demo from a source checkout: the same as ``python -m dpt_ros.webcam``.

.venv/bin/python tools/webcam_demo.py --source 0 --weights random
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

from dpt_ros.webcam import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
