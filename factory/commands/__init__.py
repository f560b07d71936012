"""The commands that read a run directory (pairs, sweep, report, plan, calibrate, summary) and their shared
text and plot helpers (`present`)."""
