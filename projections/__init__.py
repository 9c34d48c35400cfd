"""Read models derived from the event log: rebuildable, in memory for every read."""
