"""The engine: one RunSpec trained and evaluated, top to bottom (loop, device, RNG, checkpoints, timers)."""
