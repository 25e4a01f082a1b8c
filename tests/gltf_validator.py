"""The Khronos glTF validator (npm package gltf-validator) for the tests, installed on first use into
cache/node/ at the repository's root (ignored by git) with npm; tests skip, saying why, only when
node or npm is missing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

VERSION = "2.0.0-dev.3.10"
PREFIX = Path(__file__).resolve().parent.parent / "cache" / "node"
SCRIPT = """
const validator = require(process.argv[1]);
const data = require('fs').readFileSync(process.argv[2]);
validator.validateBytes(new Uint8Array(data), { maxIssues: 100 })
  .then((report) => console.log(JSON.stringify(report)))
  .catch((error) => { console.error(String(error)); process.exit(1); });
"""


def validator_module() -> Path:
    module = PREFIX / "node_modules" / "gltf-validator"
    if not (module / "package.json").exists():
        if not shutil.which("npm") or not shutil.which("node"):
            pytest.skip("the glTF validator needs node and npm (apt-get install npm), neither of which was found")
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(PREFIX), f"gltf-validator@{VERSION}"],
                       check=True, capture_output=True, timeout=600)
    return module


def validate(data: bytes, tmp_path: Path) -> dict:
    """The validator's report on a GLB (its "issues" hold numErrors, numWarnings and the messages)."""
    path = tmp_path / "validated.glb"
    path.write_bytes(data)
    result = subprocess.run(["node", "-e", SCRIPT, str(validator_module()), str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_valid(data: bytes, tmp_path: Path) -> dict:
    """No error and no warning from the validator (its informational notes are allowed)."""
    report = validate(data, tmp_path)
    issues = report["issues"]
    problems = [m for m in issues["messages"] if m["severity"] <= 1]  # 0: error, 1: warning
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, problems
    return report
