"""Every command, run with a user's mistake, prints one line on stderr naming the problem and exits 2.

:data:`MISTAKES` is the list the architecture issue asks to show: each command line (with ``{file}``,
``{dir}``, ``{missing}``, ... filled in from small fixtures) and a fragment of the one line it must
print. Mistakes are caught before any work starts, so nothing here records, trains or plays for real.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from bcarena.experiments.cli import COMMANDS, app, command_group, one_line

runner = CliRunner()

MISTAKES: list[tuple[str, str]] = [
    # the root
    ("trian", "No such command 'trian'. Did you mean 'train'?"),
    ("--bogus", "No such option: --bogus"),
    # record, play
    ("record --episodes 100000000000000000000", "'--episodes': Input should be less than or equal to 100000"),
    ("record --episodes -5", "'--episodes': Input should be greater than or equal to 1"),
    ("record --seed -1", "'--seed': Input should be greater than or equal to 0"),
    ("record --out {file}/episodes", "'{file}/episodes' lies under '{file}', which is a file"),
    ("record --out {file}", "'{file}' is a file; expected a folder"),
    ("record --game chess", "unknown game 'chess'; known games are ['boxing', 'duel']"),
    ("record --game boxing --source pro --out {missing}", "agent 'pro' was trained on game 'duel', not 'boxing'"),
    ("record --game boxing --opponents brawler --out {missing}", "opponents must be among ['cpu'], got 'brawler'"),
    ("record --source nosuch --out {missing}", "unknown player 'nosuch'"),
    ("record --opponents brawler,champ --out {missing}", "unknown player 'champ'"),
    ("record --opponents , --out {missing}", "expected one or more comma-separated names, got ','"),
    ("play", "bcarena play needs a display"),
    ("play --out {file}", "'{file}' is a file; expected a folder"),
    # dataset
    ("dataset build {missing} {dir}/ds", "'recordings': dir '{missing}' does not exist"),
    ("dataset build {file} {dir}/ds", "'recordings': dir '{file}' is a file"),
    ("dataset build {dir} {file}", "'out': '{file}' is a file; expected a folder"),
    ("dataset build {dir} {dir}/ds --split 1,2", "expected 3 comma-separated numbers train,val,test, got '1,2'"),
    ("dataset build {dir} {dir}/ds --alignment nearest", "'nearest' is not one of"),
    ("dataset build {dir} {dir}/ds --seed -3", "'--seed': Input should be greater than or equal to 0"),
    ("dataset build {recordings} {dataset}", "already exists"),
    ("dataset stats {missing}", "dir '{missing}' does not exist"),
    ("dataset stats {bad_manifest}", "manifest.json: action_names must be list, got 8"),
    ("dataset stats {dataset} --json {file}/stats.json", "lies under '{file}'"),
    ("dataset export-minari {dataset} bcarena/x-v0 --observations rgb", "'rgb' is not one of 'state', 'pixels'"),
    # train, train-composite, agent, expert
    ("train --dataset {missing} --out {dir}/run", "'--dataset': dir '{missing}' does not exist"),
    ("train --dataset {dataset} --out {file}", "'--out': '{file}' is a file; expected a folder"),
    ("train --dataset {dataset} --out {dir}/run --config {dir}", "'--config': file '{dir}' is a directory"),
    ("train --dataset {dataset} --out {dir}/run --config {missing}", "'--config': file '{missing}' does not exist"),
    ("train --dataset {dataset} --out {dir}/run --loss hinge", "'hinge' is not one of 'ce', 'weighted_ce'"),
    ("train --dataset {dataset} --out {dir}/run --epochs 0", "epochs: Input should be greater than or equal to 1"),
    ("train --dataset {dataset} --out {dir}/run --lr inf", "lr: Input should be a finite number"),
    (
        "train --dataset {dataset} --out {dir}/run --epochs 100000000000000",
        "epochs: Input should be less than or equal",
    ),
    ("train --dataset {dataset} --out {dir}/run --seed -5", "seed: Input should be greater than or equal to 0"),
    ("train --dataset {dataset} --out {dir}/run --hidden 0,5", "positive integers like 256,256, got '0,5'"),
    ("train --dataset {dataset} --out {dir}/run --events skill,ko", "unknown name(s) ['skill']"),
    ("train --dataset {dataset} --out {dir}/run --set los=ce", "unknown key 'los'"),
    ("train --dataset {dataset} --out {dir}/run --set loss", "--set expects KEY=VALUE, got 'loss'"),
    ("train --dataset {dataset} --out {checkpointed} --resume --quiet --allow-missing-classes", "missing key(s)"),
    ("train-composite --dataset {missing} --out {dir}/run", "dir '{missing}' does not exist"),
    ("train-composite --dataset {dataset} --out {dir}/run --set-skill loss=hinge", "loss"),
    ("agent info {missing}", "dir '{missing}' does not exist"),
    ("agent info {dir}", "agent.json: missing"),
    ("agent info {broken_agent}", "model.safetensors"),
    ("expert train --out {dir}/ppo --hidden abc", "positive integers like 256,256, got 'abc'"),
    ("expert train --out {dir}/ppo --opponents brawler,champ", "unknown name(s) ['champ']"),
    ("expert train --out {dir}/ppo --timesteps -1", "'--timesteps': Input should be greater than or equal to 0"),
    ("expert train --out {file}", "'{file}' is a file; expected a folder"),
    ("expert finetune --bc {missing} --out {dir}/ppo", "dir '{missing}' does not exist"),
    # eval, tournament
    ("eval offline --agent nosuch --dataset {dataset}", "unknown player 'nosuch'"),
    ("eval offline --agent pro --dataset {dataset} --split dev", "'dev' is not one of 'train', 'val', 'test'"),
    ("eval offline --agent pro --dataset {missing}", "dir '{missing}' does not exist"),
    ("eval offline --agent pro --dataset {dataset} --out {file}", "'{file}' is a file; expected a folder"),
    ("eval matches --agent pro --matches 100000000000000", "'--matches': Input should be less than or equal to"),
    ("eval matches --agent pro --matches -1", "'--matches': Input should be greater than or equal to 1"),
    ("eval matches --agent pro --opponent champ --matches 5", "unknown player 'champ'"),
    ("eval matches --agent pro --out {file}/m.json", "lies under '{file}'"),
    ("eval replay nosuch --out {dir}/r.mp4", "unknown player 'nosuch'"),
    ("eval replay pro --seed -1", "'--seed': Input should be greater than or equal to 0"),
    ("eval replay pro --out {dir}/replay.txt", "has suffix '.txt'; expected one of"),
    ("eval side-by-side pro nosuch --out {dir}/s.mp4", "unknown player 'nosuch'"),
    ("eval side-by-side pro idle --out {file}/s.mp4", "lies under '{file}'"),
    ("eval gap --agent pro --agent idle --agent random --dataset {missing}", "dir '{missing}' does not exist"),
    ("eval gap --agent pro --agent idle --agent nosuch --dataset {dataset} --matches 2", "unknown player 'nosuch'"),
    ("eval gap --agent pro --agent idle --agent random --dataset {dataset} --split dev", "'dev' is not one of"),
    ("eval boxing --agent {missing}", "no agent folder here"),
    ("eval boxing --agent {agent}", "was trained on game 'duel', not 'boxing': use a boxing agent"),
    ("eval matches --agent {agent} --game boxing", "was trained on game 'duel', not 'boxing'"),
    ("eval matches --agent expert --game chess", "unknown game 'chess'; known games are"),
    ("eval matches --agent expert --game boxing --opponent brawler", "'brawler' is a Duel bot; game 'boxing' has"),
    ("dataset stats {misspelled_names}", "are not game 'duel''s ['idle', 'left'"),
    ("run {boxing_brawler}", "evaluation.opponents.0: game 'boxing' has opponents ['cpu'], not 'brawler'"),
    ("eval boxing --agent expert --workers 0", "'--workers': Input should be greater than or equal to 1"),
    ("eval moments nosuch --dataset {dataset}", "unknown player 'nosuch'"),
    ("eval moments pro --dataset {dataset} --event skill --out {dir}/m", "unknown event(s) ['skill']"),
    ("eval moments pro --dataset {dataset} --window -1", "'--window': Input should be greater than or equal to 0"),
    ("eval moments pro --dataset {dataset} --out {file}", "'{file}' is a file; expected a folder"),
    ("eval moments pro --dataset {missing}", "dir '{missing}' does not exist"),
    ("eval moments pro --dataset {dataset} --matches 1 --opponent nosuch --out {dir}/m", "unknown player 'nosuch'"),
    ("tournament pro nosuch --matches 2 --out {dir}/t", "unknown player 'nosuch'"),
    ("tournament pro idle --out {file}", "'{file}' is a file; expected a folder"),
    ("tournament pro idle --matches 0", "'--matches': Input should be greater than or equal to 1"),
    ("tournament pro idle --executor spark", "'spark' is not one of 'local', 'ray'"),
    ("tournament pro idle --address auto", "--address and --shard-size need --executor ray"),
    ("tournament pro idle --game chess", "unknown game 'chess'; known games are"),
    (
        "tournament {agent} {boxing_agent} --matches 2",
        "players of two games: '{agent}' plays 'duel', '{boxing_agent}' plays 'boxing'",
    ),
    ("tournament expert cpu --game boxing", "game 'boxing' plays each agent against its built-in opponent ['cpu']"),
    ("eval replay expert brawler --game boxing", "'brawler' is a Duel bot; game 'boxing' has players"),
    ("eval side-by-side pro idle --game chess", "unknown game 'chess'; known games are"),
    # match, bots, run, demo, sweep
    ("match nosuchbot", "'player0': 'nosuchbot' is not one of 'idle'"),
    ("match pro --out {dir}/m.txt", "'{dir}/m.txt' has suffix '.txt'; expected one of"),
    ("match --seed -5", "'--seed': Input should be greater than or equal to 0"),
    ("bots list --all", "No such option: --all"),
    ("bots report --matches 0", "'--matches': Input should be greater than or equal to 1"),
    ("bots report --out {file}/r.json", "lies under '{file}'"),
    ("run {missing}", "'experiment': file '{missing}' does not exist"),
    ("run {dir}", "'experiment': file '{dir}' is a directory"),
    ("run {bad_experiment} --runs {dir}/runs", "variants.0.nmae: unknown key"),
    ("run {huge_experiment} --runs {dir}/runs", "recording.episodes: Input should be less than or equal to 100000"),
    ("run {cold_decoding} --runs {dir}/runs", "evaluation.decoding.0.temperature: Input should be greater than 0"),
    ("run {greedy_decoding} --runs {dir}/runs", "variants.0.decoding.1.mode: Input should be 'argmax', 'sample'"),
    ("run {one_seed_aggregates} --runs {dir}/runs", "aggregate statistics across seeds need >= 2 seeds"),
    ("run {unqueryable_expert} --runs {dir}/runs", "expert 'brawler' cannot be queried in game 'duel'"),
    ("dataset build {dir} {dir}/ds --reaction-delay soon", "--reaction-delay takes a number of frames or 'auto'"),
    ("dataset build {recordings} {dir}/ds --reaction-delay 45", "a reaction delay of 45 frames is larger than"),
    ("run {negative_delay} --runs {dir}/runs", "reaction_delay: expected a number of frames in 0..50 or 'auto'"),
    ("run {long_delay} --runs {dir}/runs", "a reaction delay of 45 frames is larger than this episode (40 frames)"),
    ("train --dataset {dataset} --out {dir}/run --set keyframe_weighting.history=0", "keyframe_weighting.history: In"),
    ("run {file} --executor dask", "'dask' is not one of 'local', 'ray'"),
    ("run {file} --address auto", "--address and --gpus-per-task need --executor ray"),
    ("run {file} --executor ray --address auto --runs runs", "--runs must be an absolute path"),
    ("run {file} --runs {file}", "'--runs': '{file}' is a file; expected a folder"),
    ("demo --runs {file}", "'--runs': '{file}' is a file; expected a folder"),
    ("sweep {missing}", "file '{missing}' does not exist"),
    ("sweep {file} --trials 0", "'--trials': Input should be greater than or equal to 1"),
    ("sweep {duel_experiment} --opponent nosuch", "opponent: unknown player 'nosuch'"),
    ("sweep {boxing_experiment} --opponent brawler", "opponent: game 'boxing' has opponents ['cpu'], not 'brawler'"),
    # check, export, serve, loadtest
    ("check {missing} -r {file}", "dir '{missing}' does not exist"),
    ("check {agent} -r {missing}", "'--requirements' / '-r': file '{missing}' does not exist"),
    ("check {agent} -r {bad_requirements}", "latncy"),
    ("check {agent} -r {file} --out {file}/check.json", "lies under '{file}'"),
    ("check {agent} -r {cpu_requirements}", "'cpu' is neither a bot of game 'duel' (its opponents are ['brawler'"),
    ("check {agent} -r {boxing_requirements}", "requirements 'box' are for game 'boxing'; agent 'clone"),
    ("check {agent} -r {chess_requirements}", "chess_requirements.yaml: game: unknown game 'chess'; known games are"),
    ("export {missing} --out {dir}/x", "dir '{missing}' does not exist"),
    ("export {agent} --out {dir}/x --format tflite", "'tflite' is not one of 'onnx', 'torchscript'"),
    ("export {agent} --out {dir}/x --observations 5", "'--observations': Input should be greater than or equal to"),
    ("export {agent} --out {file}", "'{file}' is a file; expected a folder"),
    ("serve {missing}", "dir '{missing}' does not exist"),
    ("serve models:/nosuch@champion --tracking-uri http://127.0.0.1:9", "MLflow tracking server http://127.0.0.1:9 is"),
    ("serve models:/duel --tracking-uri http://127.0.0.1:9", "model URI 'models:/duel' must be models:/NAME@ALIAS"),
    ("export {agent} --out {dir}/x --format torchscript --precision int8", "--precision int8 needs --format onnx"),
    ("export {agent} --out {dir}/x --precision int4", "'int4' is not one of 'fp32', 'int8'"),
    # register, ab
    ("register {missing} --name duel", "dir '{missing}' does not exist"),
    ("register {agent} --name duel --tracking-uri http://127.0.0.1:9", "MLflow tracking server http://127.0.0.1:9 is"),
    ("register {agent} --name a/b --tracking-uri http://127.0.0.1:9", "registered model name 'a/b' must be"),
    ("register {agent} --name duel --alias latest", "alias 'latest' must be"),
    ("ab pro brawler --elo0 20 --elo1 0", "SPRT bounds are inverted: H1 (0 Elo) must be above H0 (20 Elo)"),
    ("ab pro brawler --alpha 0.7", "SPRT alpha must lie in (0, 0.5), got 0.7"),
    ("ab pro brawler --beta 0", "SPRT beta must lie in (0, 0.5), got 0"),
    ("ab pro brawler --max-matches 0", "the match budget must be >= 2 games (one pair), got 0"),
    ("ab pro brawler --model binomial", "'binomial' is not one of 'trinomial', 'pentanomial'"),
    ("ab pro brawler --promote", "--promote needs a registered challenger"),
    ("ab pro nosuch", "unknown player 'nosuch'"),
    ("ab models:/nosuch@champion pro --tracking-uri http://127.0.0.1:9", "MLflow tracking server http://127.0.0.1:9"),
    ("ab pro models:/nosuch@champion --tracking-uri sqlite:///{dir}/m.db", "no registered model 'nosuch'"),
    ("ab pro brawler --out {file}", "'{file}' is a file; expected a folder"),
    ("serve {agent} --backend tensorrt", "'tensorrt' is not one of 'torch', 'onnx', 'torchscript'"),
    ("serve {agent} --port 0", "'--port': Input should be greater than or equal to 1"),
    ("loadtest --encoding xml", "'xml' is not one of 'json', 'npy'"),
    ("loadtest --requests 0", "'--requests': Input should be greater than or equal to 1"),
    ("loadtest --out {file}", "'{file}' is a file; expected a folder"),
    ("loadtest --open-loop --rate 0", "rate must be within (0, 20000] requests/s, got 0"),
    ("loadtest --open-loop --rate -5", "rate must be within (0, 20000] requests/s, got -5"),
    ("loadtest --open-loop --duration -1", "duration must be within (0, 600] seconds, got -1"),
    ("loadtest --ramp --ramp-from 0", "a ramp needs 0 < start <= stop"),
    ("loadtest --open-loop --url http://10.0.0.1:8000", "refusing to load-test '10.0.0.1'"),
    ("loadtest --open-loop --requirements {file}", "just: Extra inputs are not permitted"),
    ("serve {agent} --drain-s -1", "'--drain-s': Input should be greater than or equal to 0"),
    ("serve {agent} --follow-alias", "--follow-alias follows a registry alias: serve models:/NAME@ALIAS, not '{agent}"),
    ("serve models:/duel@champion --follow-alias --poll-s 0", "--poll-s must be within (0, 3600] seconds, got 0"),
    ("serve {agent} --poll-s -2", "--poll-s must be within (0, 3600] seconds, got -2"),
    ("serve {agent} --shutdown-timeout-s 0", "'--shutdown-timeout-s': Input should be greater than or equal to 0.001"),
    # dashboard, bench
    ("dashboard --runs {file}", "'--runs': '{file}' is a file; expected a folder"),
    ("dashboard --port 70000", "'--port': Input should be less than or equal to 65535"),
    ("bench nosuch", "No such command 'nosuch'"),
    ("bench env --min-seconds abc", "'--min-seconds'"),
    ("bench boxing --bouts 0", "'--bouts': Input should be greater than or equal to 1"),
    ("bench pixel-agent --batch-sizes 0,x", "--batch-sizes must be comma-separated integers, got '0,x'"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Small real inputs: a file, a folder, a 3-episode dataset, an agent and broken copies of them."""
    from bcarena.agents.policies import MLPPolicy
    from bcarena.agents.selection import Selection
    from bcarena.agents.torch_agent import ScoreModel, TorchAgent
    from bcarena.agents.train import CHECKPOINT_FILE, CHECKPOINT_FORMAT
    from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS, STATE_DIM
    from bcarena.recordings.converter import build_dataset
    from bcarena.recordings.recorder import RecordOptions, record_episodes

    root = tmp_path_factory.mktemp("mistakes")
    (root / "file.yaml").write_text("just: a file\n")
    (root / "folder").mkdir()
    recordings = root / "recordings"
    record_episodes(
        "pro", ["brawler"], 3, recordings, 0, "duel", RecordOptions(video=False, max_frames=40, progress=False)
    )
    dataset = build_dataset(recordings, root / "dataset", "sample", (0.34, 0.33, 0.33), pixels=False, progress=False)
    bad_manifest = root / "bad_manifest"
    bad_manifest.mkdir()
    for name in ("frames.parquet", "manifest.json"):
        (bad_manifest / name).write_bytes((dataset.path / name).read_bytes())
    manifest = json.loads((bad_manifest / "manifest.json").read_text())
    (bad_manifest / "manifest.json").write_text(json.dumps({**manifest, "action_names": 8}))
    torch.manual_seed(0)
    model = ScoreModel(MLPPolicy(STATE_DIM, len(ACTION_NAMES), (8,)), torch.zeros(STATE_DIM), torch.ones(STATE_DIM))
    agent = TorchAgent(
        model, list(ACTION_NAMES), list(SKILL_ACTIONS), 1, Selection(mode="argmax"), name="clone[bold]x[/bold]:x:"
    ).save(root / "agent")  # markup and an emoji code in its name
    broken = root / "broken_agent"
    broken.mkdir()
    for item in agent.iterdir():
        data = item.read_bytes()
        (broken / item.name).write_bytes(data[: len(data) // 2] if item.suffix == ".safetensors" else data)
    checkpointed = root / "checkpointed"
    checkpointed.mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 1}, checkpointed / CHECKPOINT_FILE)
    (root / "bad_experiment.yaml").write_text("name: x\nvariants:\n  - name: a\n    nmae: b\n")
    (root / "huge_experiment.yaml").write_text(
        "name: x\nrecording: {episodes: 100000000000000000000}\nvariants:\n  - name: a\n"
    )
    (root / "bad_requirements.yaml").write_text("latncy: []\n")
    (root / "cpu_requirements.yaml").write_text("win_rate:\n  - {opponent: cpu, min: 0.5}\n")  # Boxing's opponent
    (root / "boxing_requirements.yaml").write_text(
        "name: box\ngame: boxing\nwin_rate:\n  - {opponent: cpu, min: 0.5}\n"
    )
    (root / "chess_requirements.yaml").write_text("game: chess\n")
    (root / "cold_decoding.yaml").write_text(
        "name: x\nvariants:\n  - name: a\nevaluation:\n  decoding: [{mode: temperature, temperature: 0}]\n"
    )
    (root / "greedy_decoding.yaml").write_text("name: x\nvariants:\n  - name: a\n    decoding: [argmax, greedy]\n")
    misspelled = root / "misspelled_names"  # a dataset whose action names are not its game's exactly
    misspelled.mkdir()
    for name in ("frames.parquet", "manifest.json"):
        (misspelled / name).write_bytes((dataset.path / name).read_bytes())
    upper = [n.upper() for n in manifest["action_names"]]
    (misspelled / "manifest.json").write_text(json.dumps({**manifest, "action_names": upper}))
    (root / "boxing_brawler.yaml").write_text(
        "name: x\ngame: {name: boxing}\nrecording: {player: expert, opponents: [cpu]}\n"
        "evaluation: {opponents: [brawler], reference: expert}\nvariants:\n  - name: a\n"
    )
    (root / "unqueryable_expert.yaml").write_text(
        "name: x\nvariants:\n  - name: d\n    kind: dagger\n    dagger: {opponents: [pro], expert: brawler}\n"
    )
    (root / "negative_delay.yaml").write_text("name: x\ndataset: {reaction_delay: -1}\nvariants:\n  - name: a\n")
    (root / "long_delay.yaml").write_text(  # its episodes are 40 frames long
        f"name: x\nrecording: {{path: {recordings}}}\ndataset: {{reaction_delay: 45, split: [0.34, 0.33, 0.33]}}\n"
        "variants:\n  - name: a\n"
    )
    (root / "duel_experiment.yaml").write_text("name: x\nvariants:\n  - name: a\n")
    (root / "boxing_experiment.yaml").write_text(
        "name: x\ngame: {name: boxing}\nrecording: {player: expert, opponents: [cpu]}\n"
        "evaluation: {opponents: [cpu], reference: expert, replay: {opponent: cpu}}\nvariants:\n  - name: a\n"
    )
    boxing_agent = root / "boxing_agent"  # the agent, declaring another game
    boxing_agent.mkdir()
    for item in agent.iterdir():
        (boxing_agent / item.name).write_bytes(item.read_bytes())
    spec = json.loads((boxing_agent / "agent.json").read_text())
    (boxing_agent / "agent.json").write_text(json.dumps({**spec, "game": "boxing"}))
    (root / "one_seed_aggregates.yaml").write_text(
        "name: x\nseeds: [0]\nevaluation: {aggregates: true}\nvariants:\n  - name: a\n"
    )
    return {
        "file": str(root / "file.yaml"),
        "dir": str(root / "folder"),
        "missing": str(root / "missing"),
        "recordings": str(recordings),
        "dataset": str(dataset.path),
        "bad_manifest": str(bad_manifest),
        "agent": str(agent),
        "broken_agent": str(broken),
        "checkpointed": str(checkpointed),
        "bad_experiment": str(root / "bad_experiment.yaml"),
        "huge_experiment": str(root / "huge_experiment.yaml"),
        "bad_requirements": str(root / "bad_requirements.yaml"),
        **{f"{g}_requirements": str(root / f"{g}_requirements.yaml") for g in ("cpu", "boxing", "chess")},
        "cold_decoding": str(root / "cold_decoding.yaml"),
        "greedy_decoding": str(root / "greedy_decoding.yaml"),
        "misspelled_names": str(misspelled),
        "boxing_brawler": str(root / "boxing_brawler.yaml"),
        "one_seed_aggregates": str(root / "one_seed_aggregates.yaml"),
        "unqueryable_expert": str(root / "unqueryable_expert.yaml"),
        "duel_experiment": str(root / "duel_experiment.yaml"),
        "boxing_experiment": str(root / "boxing_experiment.yaml"),
        "boxing_agent": str(boxing_agent),
        "negative_delay": str(root / "negative_delay.yaml"),
        "long_delay": str(root / "long_delay.yaml"),
    }


@pytest.mark.parametrize("command, fragment", MISTAKES, ids=[command for command, _ in MISTAKES])
def test_a_mistake_is_one_line_on_stderr_and_exit_code_2(paths, command, fragment):
    result = runner.invoke(app, shlex.split(command.format(**paths)))
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment.format(**paths) in lines[0]


def test_the_table_covers_every_command():
    words = [command.split() for command, _ in MISTAKES]
    covered = {tuple(w[:2]) for w in words} | {tuple(w[:1]) for w in words}
    for path in _command_paths():
        if path[0] != "bench":  # benchmarks forward to their own modules: one of them is in the table
            assert path in covered, f"no mistake listed for `bcarena {' '.join(path)}`"


def _command_paths() -> list[tuple[str, ...]]:
    paths = []
    for name in COMMANDS:
        command = command_group(COMMANDS[name][0]).get_command(None, name)
        subcommands = getattr(command, "commands", {})
        paths += [(name, sub) for sub in subcommands] if subcommands else [(name,)]
    return paths


def test_the_real_entry_point_prints_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bcarena.experiments.cli", "match", "pro", "--out", str(tmp_path / "m.txt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (2, "") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: bcarena match: Invalid value for '--out':") and "'.txt'" in done.stderr


def test_a_bug_keeps_its_traceback(monkeypatch):
    import bcarena.experiments.bot_report as bot_report

    def broken(matches, seed):
        raise ZeroDivisionError("a bug, not a user's mistake")

    monkeypatch.setattr(bot_report, "bot_report", broken)
    result = runner.invoke(app, ["bots", "report", "--matches", "1"])
    assert result.exit_code == 1 and isinstance(result.exception, ZeroDivisionError)
    assert "error:" not in result.stderr


def test_markup_and_emoji_codes_are_shown_as_written(paths):
    result = runner.invoke(app, ["eval", "matches", "--agent", "pro", "--opponent", "champ[skill_drop=0.9]:x:"])
    assert result.exit_code == 2 and "unknown player 'champ[skill_drop=0.9]:x:'" in result.stderr
    result = runner.invoke(app, ["eval", "matches", "--help"])
    assert "pro[skill_drop=0.9]" in result.output
    result = runner.invoke(app, ["run", "--help"])
    assert "needs .[ray]" in " ".join(result.output.split())


def test_multi_line_messages_become_one_line():
    assert (
        one_line("invalid experiment:\n  a.yaml:3: x: unknown key\n  a.yaml:5: y: bad\n")
        == "invalid experiment: a.yaml:3: x: unknown key; a.yaml:5: y: bad"
    )
    assert one_line("plain") == "plain"


def test_listing_the_commands_imports_no_library_code():
    code = (
        "import sys; from bcarena.experiments.cli import app\n"
        "try: app(['--help'])\nexcept SystemExit: pass\n"
        "loaded = [m for m in ('numpy', 'torch', 'pandas', 'bcarena.envs') if m in sys.modules]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True)


def test_each_summary_is_the_first_line_of_its_commands_help():
    for name, (module, summary) in COMMANDS.items():
        command = command_group(module).get_command(None, name)
        assert command is not None, f"{name} is listed but module {module} does not define it"
        assert (command.help or "").strip().splitlines()[0] == summary, name


def test_train_flags_are_generated_from_train_config(monkeypatch, paths):
    """Every scalar TrainConfig field is a flag, and its value reaches the config."""
    import bcarena.agents.train as train_module
    from bcarena.agents.config import TrainConfig
    from bcarena.envs.errors import BcarenaError

    command = command_group("train").get_command(None, "train")
    flags = {param.name for param in command.params}
    scalar = {
        name
        for name, field in TrainConfig.model_fields.items()
        if name not in ("resample_strategy", "event_weighting", "keyframe_weighting")
    }
    assert scalar <= flags, sorted(scalar - flags)
    seen = {}

    class Stop(BcarenaError):
        pass

    def fake_train_bc(dataset, cfg, out, **kwargs):
        seen["cfg"] = cfg
        raise Stop("stopped before training")

    monkeypatch.setattr(train_module, "train_bc", fake_train_bc)
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            paths["dataset"],
            "--out",
            f"{paths['dir']}/flags",
            "--loss",
            "focal",
            "--hidden",
            "64,32",
            "--no-restore-best",
            "--batch-size",
            "7",
            "--events",
            "skill_used",
            "--set",
            "event_weighting.weight=3",
        ],
    )
    assert result.exit_code == 2 and "stopped before training" in result.stderr
    cfg = seen["cfg"]
    assert (cfg.loss, cfg.hidden, cfg.restore_best, cfg.batch_size) == ("focal", [64, 32], False, 7)
    assert cfg.event_weighting.events == ["skill_used"] and cfg.event_weighting.weight == 3
    assert (cfg.epochs, cfg.sampler) == (TrainConfig().epochs, TrainConfig().sampler)  # unset flags keep defaults


def test_agent_info_shows_a_loadable_agent_as_written(paths):
    result = runner.invoke(app, ["agent", "info", paths["agent"]])
    assert result.exit_code == 0 and '"kind": "torch"' in result.output
    assert '"name": "clone[bold]x[/bold]:x:"' in result.output
