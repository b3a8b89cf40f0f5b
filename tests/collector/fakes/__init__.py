"""Local fake exchange servers and dataset helpers for the collector tests (test-only code)."""
