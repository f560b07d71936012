"""Commands that work on a run directory (report, its page, ...): one module each, called by factory.cli."""
