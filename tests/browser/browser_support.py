"""Helpers for the browser tests: where Chromium is, and what a running registry offers."""

from __future__ import annotations

import os
from dataclasses import dataclass

from registry.secrets import KeyMaterial
from registry.settings import Settings

CHROMIUM = os.environ.get("REGISTRY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Registry:
    url: str
    env: dict[str, str]
    settings: Settings
    material: KeyMaterial
