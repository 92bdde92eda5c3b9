"""Games: the Duel fighting sim and its bots; real-game adapters. Registers gymnasium ids on import."""

import gymnasium as gym

DUEL_ID = "bcarena/Duel-v0"

if DUEL_ID not in gym.registry:
    gym.register(
        id=DUEL_ID,
        entry_point="bcarena.envs.duel.env:DuelEnv",
        vector_entry_point="bcarena.envs.duel.env:DuelVectorEnv",
    )
