"""The numbers the Python pipeline shares with the page's in-browser pipeline (web/static/device/),
read from one file, models/pipeline.json: the crop rule, detection sizes, the evidence threshold, the
surface's limits, the millimetre scale and the landmarks' mirror order."""

from __future__ import annotations

import json
from pathlib import Path

RULES_PATH = Path(__file__).parent / "models" / "pipeline.json"
RULES: dict = json.loads(RULES_PATH.read_text())
