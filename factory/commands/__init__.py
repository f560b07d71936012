"""The commands that read a run directory (pairs, sweep, report and its page, plan, calibrate, summary)
and their shared text and plot helpers (`present`): one module each, called by factory.cli."""
