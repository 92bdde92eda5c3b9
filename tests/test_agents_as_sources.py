import numpy as np
import pytest

from bcarena.agents.base import BotAgent, save_agent
from bcarena.eval.matches import load_player
from bcarena.recordings.sources import SourceError, resolve_source


def test_agent_folders_resolve_as_recording_sources_and_play_opponents(tmp_path):
    folder = save_agent(BotAgent("brawler", seed=3), tmp_path / "agent")
    # The recordings layer loads no agents: the caller loads the folder and passes the Agent.
    source = resolve_source(load_player(str(folder)))
    assert source.name == "brawler" and source.obs_type == "state" and source.kind == "bot"
    obs = np.zeros((4, 37), dtype=np.float32)
    actions = source.policy.act(obs)
    assert actions.shape == (4,) and ((0 <= actions) & (actions < 8)).all()
    # Bot names still resolve to bots, not to folders of that name.
    assert resolve_source("pro").kind == "bot"
    with pytest.raises(SourceError, match="is a path, not a bot name: load agent folders first"):
        resolve_source(str(folder))
