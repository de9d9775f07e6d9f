"""The job manager: job API, dispatch into P_JOBS, fenced attempts and the one reaper."""
