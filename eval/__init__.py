"""Evaluation: offline metrics, matches and tournaments, ratings, replays, the offline-online gap.

Public entry points:
  ``bcarena.eval.matches``     ``evaluate_matches`` -> ``MatchReport``; ``play_matches`` -> ``MatchResults``;
                               ``load_player`` (bot name, ``bot[skill_drop=P,random=Q]``, agent folder);
                               ``check_agent``; ``match_seeds``
  ``bcarena.eval.offline``     ``evaluate_offline`` -> ``OfflineReport`` (``.write(folder)``: JSON + confusion PNG);
                               ``offline_metrics`` / ``event_metrics`` on plain arrays
  ``bcarena.eval.tournament``  ``run_tournament`` -> ``TournamentResult``; ``play_pairing`` (one pure job per pairing)
  ``bcarena.eval.replays``     ``record_replay``, ``record_side_by_side`` (.mp4 / .mkv / .gif)
  ``bcarena.eval.gap``         ``gap_report`` -> ``GapReport`` (JSON, Markdown, scatter plots)
  ``bcarena.eval.stats``       ``wilson_interval``, ``spearman_bootstrap``, ``js_divergence``
Every result is a dataclass with ``to_dict()`` (JSON-ready); bad input raises ``EvalError``
(``bcarena.eval.errors``) or the lower layers' ``DatasetError`` / ``AgentFileError``.
"""
