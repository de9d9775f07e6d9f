"""The loop manager: cluster housekeeping loops with per-loop control and LOOP_* events."""
