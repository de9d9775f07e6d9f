"""The node selector: a live view of nodes, an unhealthy overlay and node ranking."""
