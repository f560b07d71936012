"""`factory eval`: candidate models on a held-out prompt set, judged and tabled the paper's way (run.py)."""
