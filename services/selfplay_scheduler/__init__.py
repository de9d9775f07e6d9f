"""The selfplay scheduler: keeps selfplay work queued to the free slots, by game priority."""
