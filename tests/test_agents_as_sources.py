import numpy as np

from bcarena.agents.base import BotAgent, save_agent
from bcarena.recordings.sources import resolve_source


def test_agent_folders_resolve_as_recording_sources_and_play_opponents(tmp_path):
    folder = save_agent(BotAgent("brawler", seed=3), tmp_path / "agent")
    player = resolve_source(str(folder))
    assert player.name == "brawler" and player.obs_type == "state"
    obs = np.zeros((4, 37), dtype=np.float32)
    actions = player.choose(obs, None, 1)
    assert actions.shape == (4,) and ((0 <= actions) & (actions < 8)).all()
    # Bot names still resolve to bots, not to folders of that name.
    assert resolve_source("pro").kind == "bot"
