"""Bounds on the counts and seeds a user gives (command-line flags and YAML keys alike).

A count far beyond any real use is a typo or an adversary (``--episodes 100000000000000000000``
would spin for ages with no output), so it is refused before any work starts, with a message
naming the flag or key and the bound. Each bound is generous: hours to days of work on one machine.
"""

from __future__ import annotations

MAX_SEED = 2**32 - 1  # seeds are 32-bit: match seeds seed, seed + 1, ... stay far from integer overflow
MAX_EPISODES = 100_000  # recorded episodes (~1 s each when batched)
MAX_MATCHES = 1_000_000  # matches per opponent, pairing or win-rate measurement
MAX_MATCH_BATCH = 65_536  # matches stepped together (memory grows with it)
MAX_RECORD_BATCH = 256  # matches recorded together: each holds one or two open video writers (file handles)
MAX_TIMESTEPS = 1_000_000_000  # PPO environment steps
MAX_PARALLEL = 4_096  # parallel environments, worker processes, concurrent trials
MAX_TRIALS = 100_000  # sweep trials
MAX_EPOCHS = 100_000  # training or sweep epochs
MAX_OBSERVATIONS = 10_000_000  # recorded observations for a parity check
MAX_FRAMES = 1_000_000  # frames per episode (a Duel match lasts at most a few thousand)
